"""The SQL models of ``dbt_like_sql/``: parse, render, build (per day or whole), replay, lineage, checks.

Building never leaves a reader with an empty or doubled table:

* ``incremental`` models build one day into a scratch table and ``REPLACE PARTITION`` it into the model,
  so re-running a day replaces that day exactly;
* ``table`` models and every replay build into ``<model>__shadow_<id>`` and ``EXCHANGE TABLES`` it with the
  model, an atomic rename;
* ``keyed`` models (one row per key, e.g. a trace) recompute only the keys that ``change_log`` says changed
  since their last build, and replace the partitions those keys left or entered (``refresh``).

With ``CLICKHOUSE_CLUSTER`` set, model tables are Replicated and created, exchanged and dropped
``ON CLUSTER``; inserts and partition replacements go to one replica and replicate.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import sqlglot

from orchestration.clickhouse import (
    ClickHouse,
    on_cluster,
    query_rows,
    query_scalar,
    replicated,
)
from orchestration.columns import column_names
from orchestration.lineage import Lineage, select_lineage
from orchestration.settings import CORE_TRUNCATE_CHARS, DATABASE

MODELS_DIR = Path(__file__).resolve().parents[1] / "dbt_like_sql"
VISIBLE = "_current"  # suffix of the views over events / events_core that hide in-flight and superseded rows
# The tables a model may read with source(): the columns of their reader views, from the DDL.
SOURCES = {name: column_names(name + VISIBLE) for name in ("events", "events_core", "scores", "traces")}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Model:
    name: str
    template: str
    config: dict[str, Any]
    refs: tuple[str, ...]
    sources: tuple[str, ...]

    @property
    def materialized(self) -> str:
        return self.config.get("materialized", "table")

    @property
    def incremental(self) -> bool:
        return self.materialized == "incremental"

    @property
    def keyed(self) -> bool:
        return self.materialized == "keyed"

    @property
    def partition_by(self) -> str:
        return self.config.get("partition_by", "day")

    @property
    def code_version(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()[:16]

    @property
    def description(self) -> str:
        return self.config.get("description", "")

    @property
    def columns(self) -> dict[str, str]:
        """Descriptions of the output columns (``config(columns=...)``), shown in the UI."""
        return dict(self.config.get("columns", {}))

    @property
    def unique_key(self) -> list[str]:
        return list(self.config.get("unique_key", []))

    @property
    def not_null(self) -> list[str]:
        """Key parts that must be set (defaults to the whole unique key)."""
        return list(self.config.get("not_null", self.unique_key))

    @property
    def reconcile(self) -> dict[str, str]:
        return dict(self.config.get("reconcile", {}))


@dataclass
class _Capture:
    config: dict[str, Any] = field(default_factory=dict)
    refs: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701 (SQL)


def _render(
    template: str,
    db: str,
    days: list[date] | None,
    capture: _Capture | None = None,
    keys_table: str | None = None,
    truncate_chars: int = CORE_TRUNCATE_CHARS,
) -> str:
    capture = capture or _Capture()

    def config(**kwargs: Any) -> str:
        capture.config.update(kwargs)
        return ""

    def ref(name: str) -> str:
        capture.refs.append(name)
        return f"{db}.{name}"

    def source(name: str) -> str:
        if name not in SOURCES:
            raise ValueError(f"unknown source {name!r}; sources are {sorted(SOURCES)}")
        capture.sources.append(name)
        return f"{db}.{name}{VISIBLE}"  # the view readers use: each observation once, even mid-window

    def partition_filter(column: str) -> str:
        return f"toDate({column}) IN {{days:Array(Date)}}" if days is not None else "1 = 1"

    def truncate(expression: str) -> str:
        """Cut text to TRACEHOUSE_CORE_TRUNCATE_CHARS, as events_core does."""
        return f"leftUTF8({expression}, {int(truncate_chars)})"

    def changed(alias: str = "") -> str:
        """Rows of the keys a keyed refresh recomputes (every row in a whole build); the second term lets
        ClickHouse use the key column's bloom filter index."""
        if keys_table is None:
            return "1 = 1"
        key = capture.config["unique_key"][1]
        prefix = f"{alias}." if alias else ""
        return (
            f"({prefix}project_id, {prefix}{key}) IN (SELECT project_id, key FROM {db}.{keys_table}) "  # noqa: S608
            f"AND {prefix}{key} IN (SELECT key FROM {db}.{keys_table})"
        )

    return (
        _environment()
        .from_string(template)
        .render(
            config=config,
            ref=ref,
            source=source,
            partition_filter=partition_filter,
            truncate=truncate,
            changed=changed,
        )
        .strip()
    )


def load_model(path: Path) -> Model:
    template = path.read_text()
    capture = _Capture()
    _render(template, DATABASE, None, capture)
    name = path.stem
    if not _NAME.match(name):
        raise ValueError(f"model file name {path.name} must be lowercase snake_case")
    materialized = capture.config.get("materialized", "table")
    if materialized not in ("table", "incremental", "keyed"):
        raise ValueError(f"{path.name}: materialized must be 'table', 'incremental' or 'keyed'")
    if materialized == "keyed" and list(capture.config.get("unique_key", []))[:1] != ["project_id"]:
        raise ValueError(f"{path.name}: a keyed model's unique_key is ['project_id', KEY]")
    if materialized == "keyed" and capture.config["unique_key"][1:] not in (["trace_id"], ["session_id"]):
        raise ValueError(
            f"{path.name}: a keyed model's KEY is trace_id or session_id (what change_log records)"
        )
    return Model(name, template, capture.config, tuple(dict.fromkeys(capture.refs)), tuple(capture.sources))


@cache
def load_models(directory: Path = MODELS_DIR) -> dict[str, Model]:
    """Every model, in dependency order (refs before the models that use them)."""
    found = {m.name: m for m in (load_model(p) for p in sorted(directory.glob("*.sql")))}
    ordered: dict[str, Model] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in ordered:
            return
        if name in path:
            raise ValueError(f"models reference each other in a cycle: {' -> '.join((*path, name))}")
        if name not in found:
            raise ValueError(f"{path[-1]} refers to unknown model {name!r}")
        for dep in found[name].refs:
            visit(dep, (*path, name))
        ordered[name] = found[name]

    for name in found:
        visit(name, ())
    return ordered


def select_sql(
    model: Model,
    db: str = DATABASE,
    days: list[date] | None = None,
    keys_table: str | None = None,
    truncate_chars: int = CORE_TRUNCATE_CHARS,
) -> str:
    """The model's SELECT; with ``days`` it reads only those days (parameter ``days``), with ``keys_table``
    only the keys listed there (a keyed refresh); ``truncate()`` cuts text to ``truncate_chars``
    (TRACEHOUSE_CORE_TRUNCATE_CHARS, passed by the caller from its settings)."""
    return _render(model.template, db, days, keys_table=keys_table, truncate_chars=truncate_chars)


# --- lineage -----------------------------------------------------------------------------------------


def output_columns(model: Model) -> list[str]:
    parsed = sqlglot.parse_one(select_sql(model), dialect="clickhouse")
    return [projection.alias_or_name for projection in parsed.selects]


def column_lineage(model: Model, models: dict[str, Model]) -> Lineage:
    """For each output column: the (table, column) pairs of sources/models it is computed from."""
    schema: dict[str, dict[str, str]] = {
        name + VISIBLE: dict.fromkeys(cols, "String") for name, cols in SOURCES.items()
    }
    for ref in model.refs:
        schema[ref] = dict.fromkeys(output_columns(models[ref]), "String")
    return select_lineage(select_sql(model), {DATABASE: schema}, lambda table: table.removesuffix(VISIBLE))


# --- building ----------------------------------------------------------------------------------------


def _engine_clause(model: Model, cluster: str | None) -> str:
    """Engine, partition and order of a model table; Replicated (Keeper path by table UUID) on a cluster."""
    engine = model.config.get("engine", "MergeTree")
    if cluster:
        engine = replicated(engine)
    parts = [f"ENGINE = {engine}"]
    if model.incremental or model.keyed:
        parts.append(f"PARTITION BY {model.partition_by}")
    parts.append(f"ORDER BY {model.config.get('order_by', 'tuple()')}")
    return " ".join(parts)


def create_empty(ch: ClickHouse, model: Model, table: str, db: str) -> None:
    ch.command(
        f"CREATE TABLE IF NOT EXISTS {db}.{table}{on_cluster(ch)} {_engine_clause(model, ch.cluster)} "
        f"EMPTY AS {select_sql(model, db)}"  # the columns only: the truncation width does not matter
    )


def drop_table(ch: ClickHouse, db: str, table: str) -> None:
    ch.command(f"DROP TABLE IF EXISTS {db}.`{table}`{on_cluster(ch)} SYNC")


def table_exists(ch: ClickHouse, table: str, db: str) -> bool:
    return bool(
        query_scalar(
            ch,
            "SELECT count() FROM system.tables WHERE database = {db:String} AND name = {t:String}",
            {"db": db, "t": table},
        )
    )


def build_day(
    ch: ClickHouse, model: Model, day: date, db: str = DATABASE, truncate_chars: int = CORE_TRUNCATE_CHARS
) -> int:
    """Rebuild one day of an incremental model; the day's partition is replaced atomically."""
    if not model.incremental:
        raise ValueError(f"{model.name} is not incremental")
    create_empty(ch, model, model.name, db)
    scratch = f"{model.name}__day_{uuid.uuid4().hex[:12]}"
    create_empty(ch, model, scratch, db)
    try:
        ch.command(
            f"INSERT INTO {db}.{scratch} {select_sql(model, db, [day], truncate_chars=truncate_chars)}",
            {"days": [day]},
        )
        rows = query_scalar(ch, f"SELECT count() FROM {db}.{scratch}")  # noqa: S608
        # the partition id of a Date partition key is YYYYMMDD; `day` is a date object, not text from data;
        # a day with no rows any more is dropped (REPLACE refuses an empty source)
        replace = (
            f"REPLACE PARTITION ID '{day:%Y%m%d}' FROM {db}.{scratch}"
            if rows
            else f"DROP PARTITION ID '{day:%Y%m%d}'"
        )
        ch.command(f"ALTER TABLE {db}.{model.name} {replace}")
    finally:
        drop_table(ch, db, scratch)
    return rows


def _drop_leftovers(ch: ClickHouse, model: Model, db: str) -> None:
    """Shadow and scratch tables a killed build left behind (builds of one model never overlap: its pool).
    A whole build needs no record of a killed keyed refresh: the models built on it are rebuilt whole."""
    rows = query_rows(
        ch,
        "SELECT name FROM system.tables WHERE database = {db:String} AND match(name, {pattern:String})",
        {"db": db, "pattern": f"^{model.name}__(shadow|day|keys|old)_[0-9a-f]{{12}}$"},
    )
    for row in rows:
        drop_table(ch, db, row["name"])


def rebuild(
    ch: ClickHouse,
    model: Model,
    days: list[date] | None = None,
    db: str = DATABASE,
    truncate_chars: int = CORE_TRUNCATE_CHARS,
) -> int:
    """Build the model into a shadow table and swap it in atomically (replays, backfills, table builds).

    With ``days`` (incremental models) only those days are computed anew; the other days are copied from
    the current table, so a backfill of some days is as atomic as a full replay.
    """
    _drop_leftovers(ch, model, db)
    shadow = f"{model.name}__shadow_{uuid.uuid4().hex[:12]}"
    create_empty(ch, model, shadow, db)
    if days is None or not model.incremental:
        ch.command(f"INSERT INTO {db}.{shadow} {select_sql(model, db, truncate_chars=truncate_chars)}")
    else:
        select = select_sql(model, db, days, truncate_chars=truncate_chars)
        ch.command(f"INSERT INTO {db}.{shadow} {select}", {"days": days})
        if table_exists(ch, model.name, db):
            day_col = model.config.get("partition_by", "day")
            ch.command(
                f"INSERT INTO {db}.{shadow} SELECT * FROM {db}.{model.name} "  # noqa: S608
                f"WHERE {day_col} NOT IN {{days:Array(Date)}}",
                {"days": days},
            )
    rows = query_scalar(ch, f"SELECT count() FROM {db}.{shadow}")  # noqa: S608
    if table_exists(ch, model.name, db):
        ch.command(f"EXCHANGE TABLES {db}.{shadow} AND {db}.{model.name}{on_cluster(ch)}")
        drop_table(ch, db, shadow)
    else:
        ch.command(f"RENAME TABLE {db}.{shadow} TO {db}.{model.name}{on_cluster(ch)}")
    return rows


# --- checks ------------------------------------------------------------------------------------------


def key_violations(ch: ClickHouse, model: Model, db: str = DATABASE) -> dict[str, int]:
    """Rows with a null/empty key part, and rows beyond one per key."""
    keys = model.unique_key
    if not keys:
        return {}
    key_list = ", ".join(keys)
    empty = " OR ".join(f"isNull({k}) OR toString({k}) = ''" for k in model.not_null) or "0"
    row = query_rows(
        ch,
        f"SELECT countIf({empty}) AS empty_keys, count() - uniqExact({key_list}) AS duplicate_keys "  # noqa: S608
        f"FROM {db}.{model.name}",
    )[0]
    return {"empty_keys": row["empty_keys"], "duplicate_keys": row["duplicate_keys"]}


def reconcile(
    ch: ClickHouse, model: Model, db: str = DATABASE, days: list[date] | None = None
) -> list[dict[str, Any]]:
    """Measures that differ between the model and events_core: per day for incremental models (``days``,
    the days a build just made; default every day the model holds), over the whole table otherwise."""
    if not model.reconcile:
        return []
    measures = list(model.reconcile.items())
    model_side = ", ".join(f"toFloat64(sum({col})) AS m_{i}" for i, (col, _) in enumerate(measures))
    source_side = ", ".join(f"toFloat64({expr}) AS s_{i}" for i, (_, expr) in enumerate(measures))
    where = model.config.get("reconcile_where", "1 = 1")
    scope_params: dict[str, Any] = {}
    if model.incremental:
        day_col = model.config.get("partition_by", "day")
        scope = f"{day_col} IN {{days:Array(Date)}}" if days is not None else "1 = 1"
        sql = (
            f"SELECT d, {', '.join(f'm_{i}, s_{i}' for i in range(len(measures)))} FROM "  # noqa: S608
            f"(SELECT {day_col} AS d, {model_side} FROM {db}.{model.name} WHERE {scope} GROUP BY d) AS m "
            f"LEFT JOIN (SELECT toDate(start_time) AS d, {source_side} FROM {db}.events_core{VISIBLE} "
            f"WHERE {where} AND toDate(start_time) IN (SELECT DISTINCT {day_col} FROM {db}.{model.name}) "
            "GROUP BY d) AS s USING (d)"
        )
        scope_params = {"days": days} if days is not None else {}
    else:
        sql = (
            f"SELECT 'all' AS d, * FROM (SELECT {model_side} FROM {db}.{model.name}) AS m "  # noqa: S608
            f"CROSS JOIN (SELECT {source_side} FROM {db}.events_core{VISIBLE} WHERE {where}) AS s"
        )
    differences = []
    for row in query_rows(ch, sql, scope_params):
        for i, (col, _expr) in enumerate(measures):
            got, want = row[f"m_{i}"] or 0.0, row[f"s_{i}"] or 0.0
            if abs(got - want) > 1e-6 * max(1.0, abs(want)):
                differences.append({"day": str(row["d"]), "column": col, "model": got, "events_core": want})
    return differences


def days_in_events(ch: ClickHouse, since: date | None = None, db: str = DATABASE) -> list[date]:
    rows = query_rows(
        ch,
        f"SELECT DISTINCT toDate(start_time) AS d FROM {db}.events_core{VISIBLE} "  # noqa: S608
        "WHERE toDate(start_time) >= {since:Date} ORDER BY d",
        {"since": since or date(1970, 1, 1)},
    )
    return [r["d"] for r in rows]


def rows_by_day(ch: ClickHouse, model: Model, db: str = DATABASE) -> dict[date, int]:
    """Rows per day of an incremental model."""
    rows = query_rows(
        ch,
        f"SELECT {model.partition_by} AS d, count() AS n FROM {db}.{model.name} GROUP BY d",  # noqa: S608
    )
    return {r["d"]: r["n"] for r in rows}
