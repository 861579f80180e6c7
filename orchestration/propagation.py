"""Micro-batch propagation: committed staging rows → merged observations with trace attributes → events.

A window is a span of *commit time* (the ``recorded_at`` of ``loaded`` ledger rows), not of event time:
late data lands in the window that is open when it is committed, so no past window ever needs re-running
for it. A window ``[lo, hi)`` is processed only when ``hi <= now - delay`` (server clock), in order, and
the watermark (``propagation_log``) moves only after its rows are committed.

One window, all heavy work inside ClickHouse:

1. fold the window's trace-level fields (``traces_staging`` rows and the attributes spans carry) into
   ``trace_attributes_ranked`` (per field the value of greatest rank: re-inserting a window changes nothing);
2. record the keys it touches in ``propagation_keys``: observations with committed rows in the window, and
   ``repair`` keys — rows already in ``events`` whose trace attributes are now stale;
3. ``INSERT ... SELECT`` one row per key, joined to the latest trace attributes: observations with one
   version and no row yet (the common case) are projected as they are; the rest are merged (latest
   non-empty field wins, the existing events row is the base for fields no staging row has).
   ``events_core`` is filled by its materialized view in the same insert;
4. publish the new rows and hide the rows they supersede, in one insert into ``events_hidden``, then delete
   the superseded rows from both tables. The current row of an observation is the one with the greatest
   ``(source_version, propagated_at, propagation_id)``, so a retry after a crash at any point, a manual
   re-run, or two runs racing all converge on exactly one row per observation; readers of
   ``events_current`` / ``events_core_current`` see exactly one at every moment in between (the window's
   rows are hidden from their insert until they are published: see migration 0011).
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2

from orchestration.clickhouse import ClickHouse, query_rows, query_scalar
from orchestration.model_prices import load_prices
from orchestration.settings import DATABASE

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
# How far before the earliest start seen in a window an existing row of the same observation may start.
LOOKUP_SLACK = timedelta(days=1)


EVENT_COLUMNS = [
    "project_id", "trace_id", "id", "parent_observation_id", "type", "name", "start_time", "end_time",
    "completion_start_time", "level", "status_message", "version", "environment", "input", "output",
    "metadata", "provided_model_name", "model_parameters", "usage_details", "provided_cost_details",
    "cost_details", "total_cost",
    "prompt_name", "prompt_version", *EVENTS_TRACE_COLUMNS, "event_ts", "source_version", "propagated_at",
    "propagation_id",
]  # fmt: skip


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


def _statements(db: str) -> Any:
    return sql_module("propagation", db)


@dataclass
class WindowResult:
    start: datetime
    end: datetime
    propagation_id: str
    observations: int = 0
    repaired: int = 0
    replaced: int = 0
    scores: int = 0


@dataclass
class PropagationReport:
    windows: list[WindowResult] = field(default_factory=list)
    watermark: datetime | None = None
    caught_up: bool = True

    @property
    def observations(self) -> int:
        return sum(w.observations for w in self.windows)

    @property
    def repaired(self) -> int:
        return sum(w.repaired for w in self.windows)

    @property
    def replaced(self) -> int:
        return sum(w.replaced for w in self.windows)

    @property
    def scores(self) -> int:
        return sum(w.scores for w in self.windows)


def server_now(ch: ClickHouse) -> datetime:
    return as_utc(query_scalar(ch, "SELECT now64(6, 'UTC')"))


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def watermark(ch: ClickHouse, db: str = DATABASE) -> datetime | None:
    """End of the latest window whose rows are committed in events (None before the first window)."""
    value = query_scalar(
        ch,
        f"SELECT maxOrNull(window_end) FROM {db}.propagation_log WHERE status = 'done'",  # noqa: S608
    )
    return as_utc(value) if value is not None else None


def _first_commit(ch: ClickHouse, db: str, after: datetime | None) -> datetime | None:
    value = query_scalar(
        ch,
        f"SELECT minOrNull(recorded_at) FROM {db}.ingest_ledger "  # noqa: S608
        "WHERE status = 'loaded' AND recorded_at >= {after:DateTime64(6, 'UTC')}",
        {"after": after or datetime(1970, 1, 1, tzinfo=UTC)},
    )
    return as_utc(value) if value is not None else None


def propagate(
    ch: ClickHouse,
    *,
    delay_seconds: int,
    interval_seconds: int,
    max_windows: int = 20,
    run_id: str = "",
    db: str = DATABASE,
    now: datetime | None = None,
    on_window: Callable[[WindowResult], None] | None = None,
    user_prices: Path | None = None,
) -> PropagationReport:
    """Process every due window after the watermark (at most ``max_windows`` non-empty ones); the model
    prices (Langfuse's list and ``user_prices``) are loaded first when they changed."""
    target = (now or server_now(ch)) - timedelta(seconds=delay_seconds)
    load_prices(ch, user_prices, db)
    drop_stale_hidden(ch, db)
    report = PropagationReport(watermark=watermark(ch, db))
    start = report.watermark
    processed = 0
    while True:
        first = _first_commit(ch, db, start)
        if first is None or first >= target:
            break  # nothing committed that is due
        if processed >= max_windows:
            report.caught_up = False
            break
        # skip empty time: the window starts at the watermark or at the first commit after it
        lo = start if start is not None and first < start + timedelta(seconds=interval_seconds) else first
        hi = min(lo + timedelta(seconds=interval_seconds), target)
        result = propagate_window(ch, lo, hi, run_id=run_id, db=db, horizon=hi)
        report.windows.append(result)
        report.watermark = start = hi
        processed += 1
        if on_window:
            on_window(result)
    return report


def propagate_window(
    ch: ClickHouse,
    lo: datetime,
    hi: datetime,
    *,
    run_id: str = "",
    db: str = DATABASE,
    horizon: datetime | None = None,
) -> WindowResult:
    """Propagate the loads committed in ``[lo, hi)``; safe to repeat (see the module docstring).

    ``horizon`` bounds the staging versions merged per observation. It is ``hi`` for the next window;
    a manual re-run of an old window passes the current watermark so it cannot write stale rows.
    """
    pid = uuid.uuid4().hex
    result = WindowResult(start=lo, end=hi, propagation_id=pid)
    window = {"lo": lo, "hi": hi, "pid": pid}
    _log(ch, db, result, "started", run_id)

    sql = _statements(db)
    ch.command(sql.insert_trace_attributes(), window)
    ch.command(sql.insert_window_keys(), window)
    result.observations = query_scalar(
        ch,
        f"SELECT count() FROM {db}.propagation_keys "  # noqa: S608
        "WHERE propagation_id = {pid:String} AND kind = 'observation'",
        window,
    )
    result.repaired, result.replaced = _write_rows(ch, db, window, max(hi, horizon or hi))
    ch.command(sql.record_trace_changes(), window)
    from orchestration.scores import propagate_scores  # scores.py builds on this module

    result.scores = propagate_scores(ch, lo, hi, max(hi, horizon or hi), db)
    _log(ch, db, result, "done", run_id)
    return result


def _write_rows(ch: ClickHouse, db: str, window: dict, horizon: datetime) -> tuple[int, int]:
    """Steps 2-4 for the keys registered under ``window['pid']``: repairs, inserts, superseded rows.

    Returns (rows repaired, superseded rows removed).
    """
    earliest = _earliest_start(ch, db, window)
    if earliest is None:
        return 0, 0
    sql = _statements(db)
    params = {**window, "horizon": horizon, "lookup_from": earliest - LOOKUP_SLACK}
    ch.command(sql.insert_repair_keys(), params)
    ch.command(sql.insert_existing_keys(), params)
    keys = query_rows(ch, sql.key_summary(), params)[0]
    repaired = 0
    if keys["repair"]:
        repaired = query_scalar(ch, sql.count_repaired(), params)
    ch.command(sql.resolve_prices(), {**params, "prices_version": _prices_version(ch, db)})
    ch.command(sql.mark_in_flight(), params)  # hidden from readers until publish_rows
    # every key needs no merge when nothing is repaired, nothing is in events yet and each observation has
    # one version in the window: the common case, decided from counts instead of a join over the keys
    if keys["repair"] == 0 and keys["existing"] == 0 and keys["versions"] <= 1:
        ch.command(sql.insert_simple(every_key_simple=True), params)
    else:
        ch.command(sql.insert_simple(), params)
        ch.command(sql.insert_merged(), params)
    return repaired, publish_rows(ch, db, params)


def _prices_version(ch: ClickHouse, db: str) -> str:
    return query_scalar(ch, f"SELECT any(seed_hash) FROM {db}.model_prices") or ""  # noqa: S608


def repair_traces(ch: ClickHouse, traces_of: str, db: str = DATABASE) -> tuple[int, int]:
    """Bring rows of the traces registered (kind 'trace') under propagation id ``traces_of`` up to date with
    the latest trace attributes, e.g. after the migration added legacy trace attributes. No window loads."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    window = {"lo": epoch, "hi": epoch, "pid": uuid.uuid4().hex, "source": traces_of}
    ch.command(
        f"INSERT INTO {db}.propagation_keys (propagation_id, kind, project_id, trace_id, id) "  # noqa: S608
        f"SELECT {{pid:String}}, 'trace', project_id, trace_id, '' FROM {db}.propagation_keys "
        "WHERE propagation_id = {source:String} AND kind = 'trace'",
        window,
    )
    return _write_rows(ch, db, window, server_now(ch))


def _earliest_start(ch: ClickHouse, db: str, window: dict) -> datetime | None:
    """The earliest start any row this window touches can have: bounds every lookup in events."""
    of_traces = query_scalar(
        ch,
        f"SELECT minOrNull(first_start) FROM {db}.trace_attributes_ranked WHERE (project_id, trace_id) IN "  # noqa: S608
        f"(SELECT project_id, trace_id FROM {db}.propagation_keys "
        "WHERE propagation_id = {pid:String} AND kind = 'trace')",
        window,
    )
    of_rows = query_scalar(
        ch,
        _statements(db).earliest_window_start(),
        window,
    )
    found = [as_utc(v) for v in (of_traces, of_rows) if v is not None]
    return min(found) if found else None


def publish_rows(ch: ClickHouse, db: str, params: dict) -> int:
    """Make the rows of propagation ``params['pid']`` visible and remove every other row of the touched
    observations but the current one, from events and events_core; returns the rows removed.

    Readers switch over in one insert (the new rows published, the superseded ones hidden), then the
    superseded rows are deleted and the propagation's ``events_hidden`` partition dropped. What the rows
    changed goes to ``change_log`` once they are visible (and before superseded rows are deleted).
    events_core is only cleaned when events had superseded rows: a retry after a crash between the two
    deletes inserts new current rows, so events has superseded rows again whenever events_core does.
    """
    sql = _statements(db)
    replaced = 0
    if query_scalar(ch, sql.others(), params):
        replaced = query_scalar(ch, f"SELECT count() FROM ({sql.superseded('events')})", params)  # noqa: S608
    if replaced:
        ch.command(sql.publish_and_retire(), params)
        ch.command(sql.record_changes(), params)  # the superseded rows' days and sessions, while they exist
        for table in ("events", "events_core"):
            ch.command(
                f"DELETE FROM {db}.{table} WHERE start_time >= {{lookup_from:DateTime64(6, 'UTC')}} "  # noqa: S608
                f"AND (project_id, id, propagation_id) IN (SELECT project_id, id, propagation_id "
                f"FROM ({sql.superseded(table)}))",
                params,
            )
    ch.command(f"ALTER TABLE {db}.events_hidden DROP PARTITION {{pid:String}}", params)  # noqa: S608
    if not replaced:
        ch.command(sql.record_changes(), params)  # once the rows are visible: a model may read it at once
    return replaced


def drop_stale_hidden(ch: ClickHouse, db: str = DATABASE) -> int:
    """Drop ``events_hidden`` partitions older than a day: left by crashed runs whose retry has long since
    superseded (and deleted) the rows they hide."""
    stale = query_rows(
        ch,
        f"SELECT DISTINCT propagation_id AS pid FROM {db}.events_hidden "  # noqa: S608
        "WHERE created_at < now() - INTERVAL 1 DAY",
    )
    for row in stale:
        ch.command(f"ALTER TABLE {db}.events_hidden DROP PARTITION {{pid:String}}", row)  # noqa: S608
    return len(stale)


def _log(ch: ClickHouse, db: str, result: WindowResult, status: str, run_id: str) -> None:
    ch.command(
        f"INSERT INTO {db}.propagation_log (window_start, window_end, status, propagation_id, observations, "  # noqa: S608
        "repaired, replaced, run_id) VALUES ({lo:DateTime64(6, 'UTC')}, {hi:DateTime64(6, 'UTC')}, "
        "{status:String}, {pid:String}, {n:UInt64}, {r:UInt64}, {x:UInt64}, {run:String})",
        {
            "lo": result.start,
            "hi": result.end,
            "status": status,
            "pid": result.propagation_id,
            "n": result.observations,
            "r": result.repaired,
            "x": result.replaced,
            "run": run_id,
        },
    )


def trace_attribute_coverage(ch: ClickHouse, since: datetime, db: str = DATABASE) -> tuple[int, int]:
    """(rows in events since ``since``, rows whose trace attributes equal the latest known ones)."""
    row = query_rows(ch, _statements(db).coverage(), {"since": since})[0]
    return row["rows"], row["current"]
