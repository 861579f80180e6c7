"""The SQL of ``orchestration/sql/`` and what it is rendered with: the trace-level and observation fields, the
columns of ``events`` and the SQL snippets that rank and fold them.

A module of its own, below propagation, scores and the migration that all render these templates, and
below the schema, whose DDL takes the same field lists: nothing here imports anything that renders them.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jinja2

from orchestration.columns import column_names

# Trace-level fields: (name in trace_attributes_ranked, ClickHouse type, "is set" condition on column `{c}`).
TRACE_FIELDS: list[tuple[str, str, str]] = [
    ("name", "String", "{c} != ''"),
    ("user_id", "String", "{c} != ''"),
    ("session_id", "String", "{c} != ''"),
    ("tags", "Array(String)", "notEmpty({c})"),
    ("release", "String", "{c} != ''"),
    ("version", "String", "{c} != ''"),
    ("environment", "String", "{c} != ''"),
    ("metadata", "Map(String, String)", "notEmpty({c})"),
    ("public", "Int8", "{c} >= 0"),
    ("bookmarked", "Int8", "{c} >= 0"),
    ("input", "String", "{c} != ''"),  # the trace's own input/output (trace-create), not its root span's
    ("output", "String", "{c} != ''"),
]


def rank_sql(
    value: str,
    is_set: str,
    ts: str = "event_ts",
    uploaded: str = "uploaded_at",
    key: str = "source_key",
) -> str:
    """The rank of a trace attribute value in ``trace_attributes_ranked``: greater is later.

    The version order of docs/design.md — event time, then upload time of the object (S3 LastModified),
    then a hash of its key — and last a hash of the value, packed into one UInt256, so ``argMax``/``max``
    compare a number instead of a tuple (4× faster on a window of 1M spans). Nothing in it depends on when
    or together with what an object was loaded, so every run, grouping and replay ranks alike. Empty
    values rank 0: they win only when nothing else is.
    """
    return (
        f"if({is_set}, bitShiftLeft(toUInt256(toUnixTimestamp64Micro({ts})), 192)"
        f" + bitShiftLeft(toUInt256(toUnixTimestamp64Micro({uploaded})), 128)"
        f" + bitShiftLeft(toUInt256(cityHash64({key})), 64)"
        f" + cityHash64({value}), toUInt256(0))"
    )


def visible_sql(db: str, retired_kind: str) -> str:
    """What the reader views (``events_current``, ``events_core_current``, ``scores_current``) keep: rows of
    no unpublished propagation and not retired by a published one (``events_hidden``, migration 0011).
    Between windows ``events_hidden`` is empty: the first term is then a constant true that ClickHouse
    folds away before planning, so reads keep the primary key and the projections (bench/README.md)."""
    hidden = f"{db}.events_hidden"
    return (
        f"(SELECT count() FROM {hidden}) = 0 "  # noqa: S608
        f"OR (propagation_id NOT IN (SELECT propagation_id FROM {hidden} WHERE kind = 'in_flight' "
        f"AND propagation_id NOT IN (SELECT propagation_id FROM {hidden} WHERE kind = 'published')) "
        f"AND (project_id, id, propagation_id) NOT IN (SELECT project_id, id, row_propagation_id "
        f"FROM {hidden} WHERE kind = '{retired_kind}'))"
    )


def latest_attributes_sql(db: str, where: str = "") -> str:
    """The latest non-empty value of every trace attribute per trace (of the traces ``where`` selects): what
    propagation joins onto observations, and the view ``traces_current`` (migration 0013)."""
    fields = "".join(f"argMax({name}.value, {name}.rank) AS {name}, " for name, _type, _set in TRACE_FIELDS)
    return (
        f"SELECT project_id, trace_id, {fields}"  # noqa: S608
        "min(first_start) AS first_start, max(last_start) AS last_start, max(updated_at) AS updated_at "
        f"FROM {db}.trace_attributes_ranked {where} GROUP BY project_id, trace_id"
    )


# events column ← trace_attributes_ranked field
EVENTS_TRACE_COLUMNS = {
    "trace_name": "name",
    "user_id": "user_id",
    "session_id": "session_id",
    "tags": "tags",
    "release": "release",
    "trace_version": "version",
    "trace_metadata": "metadata",
    "public": "public",
    "bookmarked": "bookmarked",
}
# Observation fields merged across versions: name → "is set" condition.
OBSERVATION_FIELDS: dict[str, str] = {
    "trace_id": "{c} != ''",
    "parent_observation_id": "{c} != ''",
    "type": "{c} != ''",
    "name": "{c} != ''",
    "start_time": "{c} IS NOT NULL",
    "end_time": "{c} IS NOT NULL",
    "completion_start_time": "{c} IS NOT NULL",
    "level": "{c} != ''",
    "status_message": "{c} != ''",
    "version": "{c} != ''",
    "environment": "{c} != ''",
    "input": "{c} != ''",
    "output": "{c} != ''",
    "metadata": "notEmpty({c})",
    "provided_model_name": "{c} != ''",
    "model_parameters": "{c} != ''",
    "usage_details": "notEmpty({c})",
    "cost_details": "notEmpty({c})",
    "total_cost": "{c} IS NOT NULL",
    "prompt_name": "{c} != ''",
    "prompt_version": "{c} IS NOT NULL",
}


EVENT_COLUMNS = column_names("events")  # what a propagation writes: every column of events, from the DDL


def _attr(field_name: str) -> str:
    return f"t.{field_name} = 1" if field_name in ("public", "bookmarked") else f"t.{field_name}"


def _select_list() -> list[str]:
    """The events columns of a merged row ``m`` joined to its trace's latest attributes ``t`` and to its
    model's price candidates ``p``."""
    special = {
        "project_id": "m.project_id",
        "id": "m.id",
        "start_time": "coalesce(m.start_time_merged, m.first_event_ts)",
        "level": "if(m.level_merged = '', 'DEFAULT', m.level_merged)",
        "environment": "multiIf(m.environment_merged != '', m.environment_merged, "
        "t.environment != '', t.environment, 'default')",
        "event_ts": "m.last_event_ts",
        "provided_cost_details": "m.cost_details_merged",
        "cost_details": "__cost_details__",  # provided, else calculated: insert_rows in sql/propagation.sql
        "total_cost": "__total_cost__",
        "source_version": "__source_version__",  # see insert_rows in sql/propagation.sql
        "propagated_at": "now64(6)",
        "propagation_id": "{pid:String}",
        **{col: _attr(f) for col, f in EVENTS_TRACE_COLUMNS.items()},
    }
    return [special.get(c, f"m.{c}_merged") for c in EVENT_COLUMNS]


@functools.cache
def sql_module(name: str, db: str, source_db: str | None = None) -> Any:
    """The macros of ``sql/<name>.sql`` bound to ``db`` and the column lists above (one per statement).

    ``source_db`` is where the migration's frozen copies live (``db`` unless a replay migrates them again
    into its shadow database)."""
    env = jinja2.Environment(  # noqa: S701 (SQL, not HTML)
        loader=jinja2.PackageLoader("orchestration", "sql"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    return env.get_template(f"{name}.sql").make_module(
        {
            "db": db,
            "source_db": source_db or db,
            "trace_fields": [(n, t, cond.format(c=n)) for n, t, cond in TRACE_FIELDS],
            "trace_columns": EVENTS_TRACE_COLUMNS,
            "observation_fields": list(OBSERVATION_FIELDS),
            "merge_fields": {f: cond.format(c=f) for f, cond in OBSERVATION_FIELDS.items()},
            "rank": rank_sql,
            "latest_attributes_sql": latest_attributes_sql,
            "attr": _attr,
            "select_list": _select_list(),
            "existing_field": {  # staging's types: versions of one observation are merged together
                "cost_details": "CAST(provided_cost_details AS Map(String, Float64))",
                "total_cost": "if(empty(provided_cost_details), NULL, toFloat64(total_cost))",
            },
            "event_columns": EVENT_COLUMNS,
            "insert_threads": os.cpu_count() or 1,  # events and events_core written by every core
        }
    )
