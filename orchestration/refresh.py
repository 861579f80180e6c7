"""Bring a derived table up to date doing only what changed since its last build (``change_log``).

Every write to events, scores and trace attributes — propagation windows, migrated legacy parts, repairs —
records in ``change_log`` the project, trace, session and day of the rows it wrote and of the rows it
superseded (migration 0017). A build reads the entries recorded since the previous build of its model
(``model_builds``):

* ``keyed`` models (one row per trace or per session, partitioned by a day): the changed keys are
  recomputed from all their input rows, and every partition a changed key leaves or enters is replaced
  with ``REPLACE PARTITION`` — its untouched rows copied, the changed ones new. A trace that spans midnight
  or gets an earlier span late moves between days and is still counted once; the result equals a whole
  rebuild (tests/test_refresh.py). The keys' old and new rows are recorded in turn, so a model built on
  this one (``session_summaries`` on ``trace_summaries``) follows the sessions that changed;
* ``incremental`` models rebuild the days that changed (their day is the row's start day, or the score's
  day);
* ``table`` models, a first build, a changed model file, a build older than the change log keeps, or a
  model whose upstream model was rebuilt whole: a whole blue/green rebuild.

Entries are read from a little before the previous build's cut-off (``LOOKBACK``): an insert that was
still committing when that build looked is seen by the next one. Reading an entry twice only recomputes
its keys again, which gives the same rows.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from orchestration.clickhouse import ClickHouse, on_cluster, query_rows, query_scalar
from orchestration.models import (
    Model,
    build_day,
    create_empty,
    drop_table,
    output_columns,
    rebuild,
    select_sql,
    table_exists,
)
from orchestration.propagation import as_utc, server_now
from orchestration.settings import CORE_TRUNCATE_CHARS, DATABASE

CHANGE_LOG_DAYS = 35  # days change_log keeps (migration 0017's TTL)
LOOKBACK = timedelta(minutes=10)
# change_log.source of each model source (events and events_core hold the same rows)
CHANGE_SOURCES = {"events": "events", "events_core": "events", "scores": "scores", "traces": "traces"}


@dataclass
class Build:
    model: str
    full: bool
    reason: str
    rows: int = 0
    changed_keys: int = 0
    partitions: list[date] = field(default_factory=list)


def change_sources(model: Model) -> list[str]:
    """The change_log sources a model follows: its pipeline sources and the models it refers to."""
    return sorted({CHANGE_SOURCES[s] for s in model.sources} | set(model.refs))


def last_build(ch: ClickHouse, model: str, db: str = DATABASE, full: bool = False) -> dict | None:
    rows = query_rows(
        ch,
        f"SELECT build_id, code_version, full, built_through, built_at FROM {db}.model_builds "  # noqa: S608
        "WHERE model = {model:String} AND (full OR NOT {full:Bool}) ORDER BY built_at DESC LIMIT 1",
        {"model": model, "full": full},
    )
    return rows[0] if rows else None


def _whole_build_reason(ch: ClickHouse, model: Model, now: datetime, db: str) -> tuple[str, dict | None]:
    """Why the model must be rebuilt whole ('' when its changes can be applied), and its last build."""
    last = last_build(ch, model.name, db)
    if model.materialized == "table":
        return "a table model is always rebuilt whole", last
    if last is None or not table_exists(ch, model.name, db):
        return "first build", last
    if last["code_version"] != model.code_version:
        return "the model's SQL changed", last
    through = as_utc(last["built_through"])
    if through < now - timedelta(days=CHANGE_LOG_DAYS - 1):
        return f"last built {through:%Y-%m-%d}, before the oldest change kept", last
    for ref in model.refs:
        whole = last_build(ch, ref, db, full=True)
        if whole is not None and as_utc(whole["built_at"]) > through:
            return f"{ref} was rebuilt whole since", last
    return "", last


def build(
    ch: ClickHouse,
    model: Model,
    db: str = DATABASE,
    full: bool = False,
    truncate_chars: int = CORE_TRUNCATE_CHARS,
) -> Build:
    """Bring ``model`` up to date (see the module docstring); ``full`` forces a whole rebuild (a replay);
    ``truncate_chars`` is TRACEHOUSE_CORE_TRUNCATE_CHARS (the models' ``truncate()``)."""
    now = server_now(ch)
    reason, last = _whole_build_reason(ch, model, now, db)
    if full or reason:
        result = Build(model.name, True, "replay" if full else reason)
        result.rows = rebuild(ch, model, db=db, truncate_chars=truncate_chars)
    else:
        since = as_utc(last["built_through"]) - LOOKBACK
        if model.keyed:
            result = _refresh_keys(ch, model, since, now, db, truncate_chars)
        else:
            result = Build(model.name, False, "changed days")
            result.partitions = changed_days(ch, model, since, now, db)
            result.rows = sum(build_day(ch, model, day, db, truncate_chars) for day in result.partitions)
    _record_build(ch, model, result, now, db)
    return result


def changed_days(
    ch: ClickHouse, model: Model, since: datetime, until: datetime, db: str = DATABASE
) -> list[date]:
    """Days of the model's sources with rows written or superseded in ``(since, until]``."""
    rows = query_rows(
        ch,
        f"SELECT DISTINCT day FROM {db}.change_log WHERE source IN {{sources:Array(String)}} "  # noqa: S608
        "AND recorded_at > {since:DateTime64(6, 'UTC')} AND recorded_at <= {until:DateTime64(6, 'UTC')} "
        "ORDER BY day",
        {"sources": change_sources(model), "since": since, "until": until},
    )
    return [r["day"] for r in rows]


def _refresh_keys(
    ch: ClickHouse, model: Model, since: datetime, until: datetime, db: str, truncate_chars: int
) -> Build:
    result = Build(model.name, False, "changed keys")
    _finish_leftovers(ch, model, db)
    build_id = uuid.uuid4().hex[:12]
    keys, old, scratch = (f"{model.name}__{kind}_{build_id}" for kind in ("keys", "old", "day"))
    key = model.unique_key[1]
    params = {"sources": change_sources(model), "since": since, "until": until}
    try:
        ch.command(
            f"CREATE TABLE {db}.{keys}{on_cluster(ch)} ENGINE = MergeTree ORDER BY (project_id, key) AS "  # noqa: S608
            f"SELECT DISTINCT toString(project_id) AS project_id, {key} AS key FROM {db}.change_log "
            "WHERE source IN {sources:Array(String)} AND recorded_at > {since:DateTime64(6, 'UTC')} "
            f"AND recorded_at <= {{until:DateTime64(6, 'UTC')}} AND {key} != ''",
            params,
        )
        result.changed_keys = query_scalar(ch, f"SELECT count() FROM {db}.{keys}")  # noqa: S608
        if not result.changed_keys:
            return result
        in_keys = f"(project_id, {key}) IN (SELECT project_id, key FROM {db}.{keys})"  # noqa: S608
        # the rows the changed keys have now: recorded below, with the new ones, for the models built on this
        ch.command(
            f"CREATE TABLE {db}.{old}{on_cluster(ch)} ENGINE = MergeTree ORDER BY tuple() AS "  # noqa: S608
            f"SELECT {_change_columns(model)} FROM {db}.{model.name} WHERE {in_keys}"
        )
        create_empty(ch, model, scratch, db)
        select = select_sql(model, db, keys_table=keys, truncate_chars=truncate_chars)
        ch.command(f"INSERT INTO {db}.{scratch} {select}")
        result.rows = query_scalar(ch, f"SELECT count() FROM {db}.{scratch}")  # noqa: S608
        day = model.partition_by
        result.partitions = [
            r["d"]
            for r in query_rows(
                ch,
                f"SELECT DISTINCT day AS d FROM {db}.{old} UNION DISTINCT "  # noqa: S608
                f"SELECT DISTINCT {day} AS d FROM {db}.{scratch} ORDER BY d",
            )
        ]
        ch.command(
            f"INSERT INTO {db}.{scratch} SELECT * FROM {db}.{model.name} "  # noqa: S608
            f"WHERE {day} IN {{days:Array(Date)}} AND NOT {in_keys}",
            {"days": result.partitions},
        )
        if not result.partitions:
            return result
        filled = {r["d"] for r in query_rows(ch, f"SELECT DISTINCT {day} AS d FROM {db}.{scratch}")}  # noqa: S608
        # one ALTER: the partition id of a Date partition key is YYYYMMDD (dates read back, not text); a day
        # left empty is dropped (REPLACE refuses an empty source)
        replace = ", ".join(
            f"REPLACE PARTITION ID '{d:%Y%m%d}' FROM {db}.{scratch}"
            if d in filled
            else f"DROP PARTITION ID '{d:%Y%m%d}'"
            for d in result.partitions
        )
        ch.command(f"ALTER TABLE {db}.{model.name} {replace}")
        _record_changes(ch, model, old, build_id, db, in_keys)
    finally:
        for table in (keys, old, scratch):
            drop_table(ch, db, table)
    return result


def _change_columns(model: Model) -> str:
    """change_log's columns of a model row (empty where the model has no such column)."""
    columns = set(output_columns(model))
    picked = [c if c in columns else f"'' AS {c}" for c in ("trace_id", "session_id")]
    return f"toString(project_id) AS project_id, {', '.join(picked)}, {model.partition_by} AS day"


def _record_changes(ch: ClickHouse, model: Model, old: str, build_id: str, db: str, in_keys: str) -> None:
    """The changed keys' rows before (``old``) and after the refresh, as change_log entries of the model."""
    ch.command(
        f"INSERT INTO {db}.change_log (source, writer_id, project_id, trace_id, session_id, day) "  # noqa: S608
        "SELECT DISTINCT {model:String}, {build:String}, project_id, trace_id, session_id, day FROM ("
        f"SELECT * FROM {db}.{old} UNION ALL "
        f"SELECT {_change_columns(model)} FROM {db}.{model.name} WHERE {in_keys})",
        {"model": model.name, "build": build_id},
    )


def _finish_leftovers(ch: ClickHouse, model: Model, db: str) -> None:
    """Tables a killed refresh left: its old rows are recorded (the partitions may have been replaced
    already, so nothing else knows them any more), then everything is dropped."""
    rows = query_rows(
        ch,
        "SELECT name FROM system.tables WHERE database = {db:String} AND match(name, {pattern:String})",
        {"db": db, "pattern": f"^{model.name}__(keys|old|day)_[0-9a-f]{{12}}$"},
    )
    for row in rows:
        if "__old_" in row["name"]:
            ch.command(
                f"INSERT INTO {db}.change_log (source, writer_id, project_id, trace_id, session_id, day) "  # noqa: S608
                "SELECT {model:String}, 'leftover', project_id, trace_id, session_id, day "
                f"FROM {db}.`{row['name']}`",
                {"model": model.name},
            )
        drop_table(ch, db, row["name"])


def _record_build(ch: ClickHouse, model: Model, result: Build, through: datetime, db: str) -> None:
    ch.command(
        f"INSERT INTO {db}.model_builds (model, build_id, code_version, full, built_through, changed_keys, "  # noqa: S608
        "partitions, rows) VALUES ({model:String}, {build:String}, {version:String}, {full:Bool}, "
        "{through:DateTime64(6, 'UTC')}, {keys:UInt64}, {partitions:UInt64}, {rows:UInt64})",
        {
            "model": model.name,
            "build": uuid.uuid4().hex,
            "version": model.code_version,
            "full": result.full,
            "through": through,
            "keys": result.changed_keys,
            "partitions": len(result.partitions),
            "rows": result.rows,
        },
    )
