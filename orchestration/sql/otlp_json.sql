{#- The ClickHouse fast path for OTLP/JSON objects: a SELECT over `{{ source }}` (one row per raw object:
    source_key, load_id, project_id, max_record, doc) giving observations_staging rows, mapped exactly as
    orchestration/parsers/otlp.py maps a span. orchestration/otlp_json.py inserts it.

    The SQL takes an object only when it can reproduce Python's rows for it: compact JSON (as the Collector
    writes it), span fields of the JSON types OTLP/JSON gives them, attribute values that are strings,
    booleans, integers or arrays of strings, no span events or links, no GenAI request parameters, metadata
    values that are plain or JSON-quoted strings, and nothing Python would reject. An object with anything
    else gives no row at all (the window over the object below) and the loader parses it in Python, which
    maps it or quarantines it with a reason. tests/test_otlp_json_fast_path.py holds both to the same rows,
    on fixtures and under fuzzing.

    JSONExtract reads a value of the wrong JSON type as a default, silently. The typed parse therefore comes
    with counts of the structural keys in the raw text: every "resource", "scope" and "status" is an object,
    every "attributes", "scopeSpans" and "spans" a list, every "key" and "traceId" a string, and there are as
    many of each as the parse found. A string cannot fake one: inside a JSON string every quote is escaped.
    Known residue, all JSON no exporter writes: a key that appears twice in one JSON object (simdjson reads
    the first, orjson the last), and JSON null as an AnyValue field next to another one.

    Two statements (orchestration/otlp_json.py): spans() parses the objects into one row per span with its
    attributes as parallel arrays (in layers, innermost first: parse and counts per object; one row per span;
    attribute kinds; attribute texts; the claimed attributes, parsers/otlp.py CLAIMS, by position), and
    rows() makes those the staging columns, judges each span and then each object. Each layer makes the
    previous one's expressions columns, so a value is extracted or copied once, and no expression refers to
    an alias of its own layer: those are cloned into every use, and such a query took longer to plan than to
    run. Nothing here throws on any input (the *OrZero/*OrNull conversions), so one odd object cannot fail
    the others. Jinja splices identifiers, attribute keys from parsers/otlp.py and types; every value is
    data. -#}

{%- set VALUE = "Tuple(stringValue Nullable(String), boolValue Nullable(Bool), intValue Dynamic, doubleValue Nullable(String), arrayValue Nullable(String), kvlistValue Nullable(String), bytesValue Nullable(String))" -%}
{%- set ATTRS = "Array(Tuple(key String, value " ~ VALUE ~ "))" -%}
{%- set SPAN = "Tuple(traceId String, spanId String, parentSpanId String, name Nullable(String), kind Dynamic, startTimeUnixNano Dynamic, endTimeUnixNano Dynamic, attributes " ~ ATTRS ~ ", events String, links String, status Tuple(code Dynamic, message Nullable(String)))" -%}
{%- set SS = "Tuple(scope Tuple(name Nullable(String), version Nullable(String), attributes " ~ ATTRS ~ "), spans Array(" ~ SPAN ~ "))" -%}
{%- set RS = "Tuple(resource Tuple(attributes " ~ ATTRS ~ "), scopeSpans Array(" ~ SS ~ "))" -%}
{%- set TAGS_KEY = claims.tags[0] -%}
{%- set ISO_8601 = '^(19[0-9][1-9]|19[1-9]0|2[01][0-9][0-9])-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\\\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?$' -%}
{%- set STRING_FIELDS = ['type', 'model', 'level', 'status_message', 'environment', 'trace_name', 'version',
                         'prompt_name', 'user_id', 'session_id', 'release', 'completion_start_time', 'usage', 'cost'] -%}

{%- macro lit(text) -%}'{{ text | replace("\\", "\\\\") | replace("'", "\\'") }}'{%- endmacro %}
{%- macro items_of(values) -%}{% for x in values %}{{ lit(x) }}{% if not loop.last %}, {% endif %}{% endfor %}{%- endmacro %}
{%- macro list(values) -%}[{{ items_of(values) }}]{%- endmacro %}
{%- macro n(text) -%}countSubstrings(doc, {{ lit(text) }}){%- endmacro %}

{#- Per attribute the kind of value Python's _json_value returns, restricted to what this path maps:
    's' string, 'b' bool, 'i' integer, 'a' array of strings that is printable ASCII (so its JSON text is
    orjson's), 'A' other array of strings; '?' anything else, which sends the object to Python. -#}
{%- macro kinds(attrs) -%}
arrayMap(v -> multiIf(
    v.stringValue IS NOT NULL, 's',
    v.boolValue IS NOT NULL, 'b',
    dynamicType(v.intValue) != 'None',
        if(dynamicType(v.intValue) IN ('Int64', 'UInt64')
           OR match(ifNull(dynamicElement(v.intValue, 'String'), ''), '^-?[0-9]{1,18}$'), 'i', '?'),
    v.doubleValue IS NOT NULL, '?',
    v.arrayValue IS NOT NULL,
        multiIf(NOT (isValidJSON(v.arrayValue) AND JSONType(v.arrayValue) = 'Object'
                     AND ifNull(JSONType(v.arrayValue, 'values'), 'Array') = 'Array'
                     AND countSubstrings(v.arrayValue, '"stringValue":"') = JSONLength(v.arrayValue, 'values')
                     AND countSubstrings(v.arrayValue, 'Value":') = JSONLength(v.arrayValue, 'values')), '?',
                arrayAll(e -> match(e, '^[ -~]*$'), {{ elements('v') }}), 'a',
                'A'),
    '?'), {{ attrs }}.value)
{%- endmacro %}

{#- The strings of an array value (v: a VALUE tuple) -#}
{%- macro elements(v) -%}
JSONExtract(ifNull({{ v }}.arrayValue, '{}'), 'values', 'Array(Tuple(stringValue String))').stringValue
{%- endmacro %}

{#- Per attribute its value as text, as Python's json_text writes it into metadata. -#}
{%- macro texts(attrs, kinds_) -%}
arrayMap((v, kd) -> multiIf(
    kd = 's', assumeNotNull(v.stringValue),
    kd = 'b', if(assumeNotNull(v.boolValue), 'true', 'false'),
    kd = 'i', multiIf(dynamicType(v.intValue) = 'Int64', toString(ifNull(dynamicElement(v.intValue, 'Int64'), 0)),
                      dynamicType(v.intValue) = 'UInt64', toString(ifNull(dynamicElement(v.intValue, 'UInt64'), 0)),
                      toString(toInt64OrZero(ifNull(dynamicElement(v.intValue, 'String'), '')))),
    kd IN ('a', 'A'), concat('[', arrayStringConcat(arrayMap(e -> concat('"', replaceAll(replaceAll(e, '\\', '\\\\'), '"', '\\"'), '"'), {{ elements('v') }}), ','), ']'),
    ''), {{ attrs }}.value, {{ kinds_ }})
{%- endmacro %}

{#- The position in the span's attributes of the first claimed key with a non-empty value (0: none). -#}
{%- macro claim_index(field) -%}
multiIf({% for key in claims[field] %}nonempty[indexOf(k, {{ lit(key) }})], indexOf(k, {{ lit(key) }}), {% endfor %}0)
{%- endmacro %}

{#- The span's attributes of one group (g): their keys without the group's prefix, their values (JSON
    strings unquoted for metadata, as Python's _maybe_json). Parallel arrays: no lambda captures v. -#}
{%- macro group_keys(group, prefix='') -%}
arrayMap(key -> substring(key, {{ prefix | length + 1 }}), arrayFilter((key, gr) -> gr = '{{ group }}', k, g))
{%- endmacro %}
{%- macro group_values(group, unquoted=false) -%}
{%- if unquoted -%}
arrayMap((x, kd) -> if(kd = 's', {{ unquote('x') }}, x), arrayFilter((x, gr) -> gr = '{{ group }}', v, g),
         arrayFilter((kd, gr) -> gr = '{{ group }}', t, g))
{%- else -%}
arrayFilter((x, gr) -> gr = '{{ group }}', v, g)
{%- endif -%}
{%- endmacro %}

{#- _maybe_json of a string value, stringified: JSON strings lose their quotes, integers and true/false stay,
    null becomes ''. Objects, arrays, other numbers and padded JSON are left to Python (unquote_ok). -#}
{%- macro unquote(x) -%}
multiIf(startsWith({{ x }}, '"') AND isValidJSON({{ x }}), JSONExtractString({{ x }}), {{ x }} = 'null', '', {{ x }})
{%- endmacro %}
{%- macro unquote_ok(x) -%}
((startsWith({{ x }}, '"') AND isValidJSON({{ x }})) OR {{ x }} IN ('true', 'false', 'null')
 OR match({{ x }}, '^(0|-?[1-9][0-9]{0,17})$')
 OR NOT (match({{ x }}, '^[-0-9\\[{]') OR isValidJSON({{ x }})))
{%- endmacro %}

{#- A JSON object of numbers (usage_details, cost_details), given as its text and its (key, raw value)
    pairs: distinct keys, numbers or nulls (Python skips nulls). -#}
{%- macro number_object_ok(x, pairs, non_negative) -%}
({{ x }} = '' OR (JSONType({{ x }}) = 'Object' AND length(arrayDistinct({{ pairs }}.1)) = length({{ pairs }})
 AND arrayAll(p -> p.2 = 'null' OR (match(p.2, '^-?[0-9]') AND isFinite(toFloat64OrZero(p.2))
                                      {%- if non_negative %} AND toFloat64OrZero(p.2) >= 0 AND toFloat64OrZero(p.2) < 1e19{% endif %}),
              {{ pairs }})))
{%- endmacro %}
{#- A number given as an integer attribute or a plain decimal string (gen_ai.usage.*). -#}
{%- macro number_ok(x, kd, non_negative) -%}
({{ kd }} = '' OR ({{ kd }} IN ('i', 's') AND match({{ x }}, '^{% if not non_negative %}-?{% endif %}[0-9]{1,18}(\\.[0-9]{1,17})?$')))
{%- endmacro %}
{%- macro uint(x) -%}toUInt64(least(greatest(toFloat64OrZero({{ x }}), 0), 1e19)){%- endmacro %}
{%- macro with_total(keys_, values_) -%}
if(notEmpty({{ keys_ }}) AND NOT has({{ keys_ }}, 'total'),
   mapFromArrays(arrayPushBack({{ keys_ }}, 'total'), arrayPushBack({{ values_ }}, arraySum({{ values_ }}))),
   mapFromArrays({{ keys_ }}, {{ values_ }}))
{%- endmacro %}

{#- OTLP enums: a JSON integer or one of the names (absent or '' is 0). -#}
{%- macro enum_ok(x, names) -%}
(dynamicType({{ x }}) IN ('None', 'Int64', 'UInt64') OR ifNull(dynamicElement({{ x }}, 'String'), '?') IN ('', {{ items_of(names) }}))
{%- endmacro %}
{%- macro enum_value(x, names) -%}
multiIf(dynamicType({{ x }}) = 'Int64', ifNull(dynamicElement({{ x }}, 'Int64'), 0),
        dynamicType({{ x }}) = 'UInt64', -1,
        transform(ifNull(dynamicElement({{ x }}, 'String'), ''), {{ list(names) }}, [{{ names.values() | join(', ') }}], 0))
{%- endmacro %}

{#- OTLP nanoseconds (a JSON integer or a string of digits); NULL when absent or 0, as nanos_to_us. -#}
{%- macro nanos_ok(x) -%}
(dynamicType({{ x }}) IN ('None', 'UInt64') OR ifNull(dynamicElement({{ x }}, 'Int64'), -1) >= 0
 OR match(ifNull(dynamicElement({{ x }}, 'String'), ''), '^[0-9]{1,19}$'))
{%- endmacro %}
{%- macro nanos(x) -%}
multiIf(dynamicType({{ x }}) = 'Int64', if(dynamicElement({{ x }}, 'Int64') > 0, toUInt64(dynamicElement({{ x }}, 'Int64')), NULL),
        dynamicType({{ x }}) = 'UInt64', dynamicElement({{ x }}, 'UInt64'),
        ifNull(dynamicElement({{ x }}, 'String'), '') IN ('', '0'), NULL, toUInt64OrNull(dynamicElement({{ x }}, 'String')))
{%- endmacro %}
{%- macro micros(ns) -%}
fromUnixTimestamp64Micro(toInt64(least(intDiv(assumeNotNull({{ ns }}), 1000), 7258118400000000)), 'UTC')
{%- endmacro %}

{%- macro spans() -%}
-- the claimed attributes, by position
SELECT
    *,
    arrayMap(x -> x != '', v) AS nonempty,
    -- where an attribute goes: a claimed column (c), trace (t) or observation (o) metadata, the rest (r)
    arrayMap(key -> multiIf(startsWith(key, {{ lit(prefixes.trace_metadata) }}), 't',
                            startsWith(key, {{ lit(prefixes.observation_metadata) }}), 'o',
                            has({{ list(claimed_keys) }}, key) OR startsWith(key, {{ lit(prefixes.genai_request) }}), 'c',
                            'r'), k) AS g,
    {%- for field in claims %}
    {{ claim_index(field) }} AS i_{{ field }},
    {%- endfor %}
    -- resource.* attributes, scope.name and scope.version, scope.* attributes, as Python orders them
    arrayConcat(arraySlice(context_attr_keys, 1, resource_count), scope_keys,
                arraySlice(context_attr_keys, resource_count + 1)) AS context_keys,
    arrayConcat(arraySlice(context_attr_texts, 1, resource_count), scope_texts,
                arraySlice(context_attr_texts, resource_count + 1)) AS context_values,
    arrayConcat(arraySlice(context_attr_kinds, 1, resource_count), arrayMap(x -> 's', scope_keys),
                arraySlice(context_attr_kinds, resource_count + 1)) AS context_kinds
FROM (
    -- attribute values as text; the attributes themselves are not needed after this
    SELECT
        * EXCEPT (span_attrs, context_attrs),
        {{ texts('span_attrs', 't') }} AS v,
        {{ texts('context_attrs', 'context_attr_kinds') }} AS context_attr_texts,
        {{ elements('span_attrs[indexOf(k, ' ~ lit(TAGS_KEY) ~ ')].value') }} AS tag_elements
    FROM (
        -- attribute kinds
        SELECT
            *,
            {{ kinds('span_attrs') }} AS t,
            {{ kinds('context_attrs') }} AS context_attr_kinds
        FROM (
            -- one row per span
            SELECT
                source_key, load_id, project_id, max_record, tree_ok,
                sp.attributes AS span_attrs,
                span_attrs.key AS k,
                arrayConcat(rs.resource.attributes, ss.scope.attributes) AS context_attrs,
                length(rs.resource.attributes) AS resource_count,
                arrayConcat(arrayMap(key -> concat('resource.', key), rs.resource.attributes.key),
                            arrayMap(key -> concat('scope.', key), ss.scope.attributes.key)) AS context_attr_keys,
                arrayFilter((key, x) -> x != '', ['scope.name', 'scope.version'],
                            [ifNull(ss.scope.name, ''), ifNull(ss.scope.version, '')]) AS scope_keys,
                arrayFilter(x -> x != '', [ifNull(ss.scope.name, ''), ifNull(ss.scope.version, '')]) AS scope_texts,
                lower(sp.traceId) AS trace_id,
                lower(sp.spanId) AS id,
                lower(sp.parentSpanId) AS parent_observation_id,
                ifNull(sp.name, '') AS name,
                {{ nanos('sp.startTimeUnixNano') }} AS start_ns,
                {{ nanos('sp.endTimeUnixNano') }} AS end_ns,
                {{ micros('start_ns') }} AS start_time,
                if(isNull(end_ns), NULL, {{ micros('end_ns') }}) AS end_time,
                if(ifNull(end_ns, 0) >= 1000, {{ micros('end_ns') }}, start_time) AS event_ts,  -- end_us or start_us
                transform({{ enum_value('sp.kind', kind_by_name) }}, [{{ kind_names.keys() | join(', ') }}],
                          {{ list(kind_names.values()) }}, 'UNSPECIFIED') AS kind_name,
                {{ enum_value('sp.status.code', status_names) }} AS status_code,
                ifNull(sp.status.message, '') AS span_status_message,
                (
                    match(sp.traceId, '^[0-9a-fA-F]{32}$') AND match(sp.spanId, '^[0-9a-fA-F]{16}$')
                    AND (sp.parentSpanId = '' OR match(sp.parentSpanId, '^[0-9a-fA-F]{16}$'))
                    AND {{ enum_ok('sp.kind', kind_by_name) }} AND {{ enum_ok('sp.status.code', status_names) }}
                    AND {{ nanos_ok('sp.startTimeUnixNano') }} AND {{ nanos_ok('sp.endTimeUnixNano') }}
                    AND start_ns IS NOT NULL AND start_ns <= 7258118400000000999
                    AND ifNull(end_ns, 0) <= 7258118400000000999
                    AND sp.events IN ('', '[]') AND sp.links IN ('', '[]')
                ) AS fields_ok
            FROM (
                -- one row per object: the parse, and the counts that say it read the text as it is
                SELECT
                    source_key, load_id, project_id, max_record,
                    JSONExtract(doc, 'resourceSpans', 'Array({{ RS }})') AS resource_spans,
                    arrayMap(r -> r.scopeSpans, resource_spans) AS scopes,
                    arrayFlatten(arrayMap(r -> arrayMap(s -> s.spans, r.scopeSpans), resource_spans)) AS spans,
                    arraySum(arrayMap(r -> length(r.resource.attributes)
                                           + arraySum(arrayMap(s -> length(s.scope.attributes)
                                                                    + arraySum(arrayMap(x -> length(x.attributes), s.spans)),
                                                               r.scopeSpans)),
                                      resource_spans)) AS attributes_parsed,
                    -- JSONExtract reads a list whose elements all have the wrong type as []: so
                    -- every non-empty "attributes" list must have parsed into a non-empty array
                    arraySum(arrayMap(r -> notEmpty(r.resource.attributes)
                                           + arraySum(arrayMap(s -> notEmpty(s.scope.attributes)
                                                                    + arraySum(arrayMap(x -> notEmpty(x.attributes), s.spans)),
                                                               r.scopeSpans)),
                                      resource_spans)) AS attribute_lists_parsed,
                    (
                        {{ n('"resourceSpans":') }} = 1 AND {{ n('"resourceSpans":[') }} = 1
                        AND {{ n('"scopeSpans":') }} = length(resource_spans) AND {{ n('"scopeSpans":[') }} = length(resource_spans)
                        AND {{ n('"spans":') }} = length(arrayFlatten(scopes)) AND {{ n('"spans":[') }} = length(arrayFlatten(scopes))
                        AND arrayAll(r -> notEmpty(r), scopes) AND arrayAll(s -> notEmpty(s.spans), arrayFlatten(scopes))
                        AND {{ n('"spanId":') }} = length(spans) AND {{ n('"spanId":"') }} = length(spans)
                        AND {{ n('"traceId":') }} = length(spans) AND {{ n('"traceId":"') }} = length(spans)
                        AND {{ n('"parentSpanId":') }} = {{ n('"parentSpanId":"') }}
                        AND {{ n('"key":') }} = attributes_parsed AND {{ n('"key":"') }} = attributes_parsed
                        {%- for key in ['resource', 'scope', 'status'] %}
                        AND {{ n('"' ~ key ~ '":') }} = {{ n('"' ~ key ~ '":{') }} + {{ n('"' ~ key ~ '":null') }}
                        {%- endfor %}
                        AND {{ n('"attributes":') }} = {{ n('"attributes":[') }} + {{ n('"attributes":null') }}
                        AND {{ n('"attributes":[') }} = {{ n('"attributes":[]') }} + attribute_lists_parsed
                        {%- for key in ['name', 'message', 'version'] %}
                        AND {{ n('"' ~ key ~ '":') }} = {{ n('"' ~ key ~ '":"') }} + {{ n('"' ~ key ~ '":null') }}
                        {%- endfor %}
                        AND {{ n('"stringValue":') }} = {{ n('"stringValue":"') }}
                        AND {{ n('"boolValue":') }} = {{ n('"boolValue":true') }} + {{ n('"boolValue":false') }}
                        AND {{ n('"instrumentationLibrary') }} = 0
                    ) AS tree_ok
                FROM {{ source }}
            )
            ARRAY JOIN resource_spans AS rs
            ARRAY JOIN rs.scopeSpans AS ss
            ARRAY JOIN ss.spans AS sp
        )
    )
)
{%- endmacro %}

{%- macro rows(spans) -%}
SELECT
    project_id, trace_id, id, parent_observation_id, type, name, start_time, end_time, completion_start_time,
    level, status_message, version, environment, input, output, metadata, provided_model_name,
    model_parameters, usage_details, cost_details, total_cost, prompt_name, prompt_version, trace_name,
    user_id, session_id, tags, release, trace_metadata, public, false AS is_update,
    'otlp_json' AS source_format, source_key, event_ts, load_id
FROM (
    -- the object's verdict: taken whole or not at all
    SELECT
        source_key, load_id, project_id, tree_ok, trace_id, id, parent_observation_id, type, name, start_time,
        end_time, completion_start_time, level, status_message, version, environment, input, output,
        metadata, provided_model_name, model_parameters, usage_details, cost_details, total_cost, prompt_name,
        prompt_version, trace_name, user_id, session_id, tags, release, trace_metadata, public, event_ts,
        min(ifNull(span_ok, false)) OVER (PARTITION BY source_key) AND tree_ok AS object_ok  -- min skips NULLs
    FROM (
        -- the last columns, and whether Python would write exactly this row
        SELECT
            *,
            if(empty(cost_details), NULL,
               if(mapContains(cost_details, 'total'), cost_details['total'],
                  arrayFold((acc, x) -> acc + x, mapValues(cost_details), toFloat64(0)))) AS total_cost,
            multiIf(claimed_type != '', upper(claimed_type), genai_type != '', genai_type,
                    provided_model_name != '' OR notEmpty(usage_details), 'GENERATION', 'SPAN') AS type,
            mapFromArrays(metadata_keys, metadata_values) AS metadata,
            (
                fields_ok
                AND NOT has(t, '?') AND NOT has(context_kinds, '?') AND NOT has(context_kinds, 'A')
                AND length(arrayDistinct(k)) = length(k)
                AND length(arrayDistinct(metadata_keys)) = length(metadata_keys)
                AND NOT arrayExists((key, kd) -> kd = 'A' AND key != {{ lit(TAGS_KEY) }}, k, t)
                {%- for field in STRING_FIELDS %}
                AND t[i_{{ field }}] IN ('', 's')
                {%- endfor %}
                AND match(claimed_type, '^[ -~]*$') AND match(claimed_level, '^[ -~]*$')
                AND i_trace_metadata = 0 AND i_observation_metadata = 0
                AND {{ number_object_ok('usage_json', 'usage_raw', true) }}
                AND (notEmpty(usage_pairs) OR ({{ number_ok('v[i_usage_input]', 't[i_usage_input]', true) }}
                                               AND {{ number_ok('v[i_usage_output]', 't[i_usage_output]', true) }}
                                               AND {{ number_ok('v[i_usage_total]', 't[i_usage_total]', true) }}))
                AND arraySum(arrayMap(x -> toFloat64(x), mapValues(usage_details))) < 1.8e19
                AND {{ number_object_ok('cost_json', 'cost_raw', false) }}
                AND (notEmpty(cost_pairs) OR {{ number_ok('v[i_cost_total]', 't[i_cost_total]', false) }})
                AND t[i_model_parameters] != 'A'
                AND (i_model_parameters != 0 OR NOT arrayExists(key -> startsWith(key, {{ lit(prefixes.genai_request) }}), k))
                AND t[i_input] != 'A' AND t[i_output] != 'A'
                AND (i_prompt_version = 0
                     OR (t[i_prompt_version] IN ('i', 's') AND match(v[i_prompt_version], '^[0-9]{1,10}$')
                         AND toUInt64OrZero(v[i_prompt_version]) <= 4294967295))
                AND t[i_public] IN ('', 'b')
                AND (completion_start_text = ''
                     OR ((v[i_completion_start_time] = completion_start_text OR isValidJSON(v[i_completion_start_time]))
                         AND match(completion_start_text, '{{ ISO_8601 }}')
                         AND formatDateTime(toDate32OrZero(substring(completion_start_text, 1, 10)), '%Y-%m-%d')
                             = substring(completion_start_text, 1, 10)
                         AND completion_start_time IS NOT NULL))
                AND (i_environment != 0
                     OR ({% for key in resource_environment_keys %}context_kinds[indexOf(context_keys, {{ lit(key) }})] IN ('', 's'){% if not loop.last %} AND {% endif %}{% endfor %}))
                AND t[i_tags] IN ('', 'a', 'A', 's')
                AND (tags_json = '' OR (JSONType(tags_json) = 'Array'
                                        AND arrayAll(x -> JSONType(x) = 'String', JSONExtractArrayRaw(tags_json))))
                AND arrayAll((x, kd) -> kd != 's' OR {{ unquote_ok('x') }},
                             arrayFilter((x, gr) -> gr IN ('t', 'o'), v, g), arrayFilter((kd, gr) -> gr IN ('t', 'o'), t, g))
                -- check_record_size counts characters; bytes are never fewer, so bytes within the limit are enough
                AND length(input) + length(output) + arraySum(arrayMap(x -> length(x), metadata_keys))
                    + arraySum(arrayMap(x -> length(x), metadata_values)) + arraySum(arrayMap(x -> length(x), mapKeys(trace_metadata)))
                    + arraySum(arrayMap(x -> length(x), mapValues(trace_metadata))) <= max_record
            ) AS span_ok
        FROM (
            -- the staging columns that take more than a lookup
            SELECT
                *,
                if(notEmpty(usage_pairs),
                   {{ with_total('arrayMap(p -> p.1, usage_pairs)', 'arrayMap(p -> ' ~ uint('p.2') ~ ', usage_pairs)') }},
                   {{ with_total("arrayFilter((n, x) -> x != '', ['input', 'output', 'total'], genai_usage)",
                                 "arrayMap(x -> " ~ uint('x') ~ ", arrayFilter(x -> x != '', genai_usage))") }}) AS usage_details,
                if(notEmpty(cost_pairs) OR i_cost_total = 0,
                   mapFromArrays(arrayMap(p -> p.1, cost_pairs), arrayMap(p -> toFloat64OrZero(p.2), cost_pairs)),
                   map('total', toFloat64OrZero(v[i_cost_total]))) AS cost_details,
                mapFromArrays({{ group_keys('t', prefixes.trace_metadata) }}, {{ group_values('t', unquoted=true) }}) AS trace_metadata,
                if(claimed_level != '', claimed_level, if(status_code = 2, 'ERROR', 'DEFAULT')) AS level,
                if(i_status_message != 0, v[i_status_message], span_status_message) AS status_message,
                if(i_prompt_version = 0, NULL, toUInt32OrNull(v[i_prompt_version])) AS prompt_version,
                if(t[i_public] = 'b', v[i_public] = 'true', NULL) AS public,
                if(completion_start_text = '', NULL, parseDateTime64BestEffortOrNull(completion_start_text, 6, 'UTC')) AS completion_start_time,
                multiIf(i_environment != 0, v[i_environment],
                        {% for key in resource_environment_keys %}context_values[indexOf(context_keys, {{ lit(key) }})] != '',
                        context_values[indexOf(context_keys, {{ lit(key) }})],
                        {% endfor %}'default') AS environment,
                if(i_trace_name != 0, v[i_trace_name], if(parent_observation_id = '', name, '')) AS trace_name,
                arraySort(arrayDistinct(multiIf(
                    t[i_tags] IN ('a', 'A'), tag_elements,
                    tags_json != '', JSONExtract(tags_json, 'Array(String)'),
                    arrayFilter(x -> x != '', splitByChar(',', v[i_tags]))))) AS tags,
                -- metadata: the context, every attribute no column claimed, the observation metadata, the kind
                arrayConcat(context_keys, {{ group_keys('r') }}, {{ group_keys('o', prefixes.observation_metadata) }},
                            if(kind_name IN ('INTERNAL', 'UNSPECIFIED'), [], ['otel.span.kind'])) AS metadata_keys,
                arrayConcat(context_values, {{ group_values('r') }}, {{ group_values('o', unquoted=true) }},
                            if(kind_name IN ('INTERNAL', 'UNSPECIFIED'), [], [kind_name])) AS metadata_values
            FROM (
                -- the claimed attributes' values
                SELECT
                    *,
                    v[i_type] AS claimed_type,
                    transform(v[i_operation], {{ list(genai_types) }}, {{ list(genai_types.values()) }}, '') AS genai_type,
                    v[i_model] AS provided_model_name,
                    v[i_usage] AS usage_json,
                    JSONExtractKeysAndValuesRaw(v[i_usage]) AS usage_raw,
                    arrayFilter(p -> p.2 != 'null', JSONExtractKeysAndValuesRaw(v[i_usage])) AS usage_pairs,
                    [v[i_usage_input], v[i_usage_output], v[i_usage_total]] AS genai_usage,
                    v[i_cost] AS cost_json,
                    JSONExtractKeysAndValuesRaw(v[i_cost]) AS cost_raw,
                    arrayFilter(p -> p.2 != 'null', JSONExtractKeysAndValuesRaw(v[i_cost])) AS cost_pairs,
                    v[i_model_parameters] AS model_parameters,
                    upper(v[i_level]) AS claimed_level,
                    {{ unquote('v[i_completion_start_time]') }} AS completion_start_text,
                    v[i_version] AS version,
                    v[i_input] AS input,
                    v[i_output] AS output,
                    v[i_prompt_name] AS prompt_name,
                    v[i_user_id] AS user_id,
                    v[i_session_id] AS session_id,
                    v[i_release] AS release,
                    if(t[i_tags] = 's' AND startsWith(v[i_tags], '['), v[i_tags], '') AS tags_json  -- a JSON list in a string
                FROM {{ spans }}
            )
        )
    )
)
WHERE object_ok
{%- endmacro %}
