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
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from orchestration.clickhouse import ClickHouse, query_rows, query_scalar
from orchestration.columns import column_names
from orchestration.lineage import Lineage, insert_lineage
from orchestration.model_prices import load_prices
from orchestration.scores import propagate_scores
from orchestration.settings import DATABASE
from orchestration.sql_macros import sql_module

# How far before the earliest start seen in a window an existing row of the same observation may start.
LOOKUP_SLACK = timedelta(days=1)


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


# What the column lineage of events names: the tables Dagster shows as assets. The propagation's bookkeeping
# tables in between are replaced by what fills them; the ledger (which loads are committed) and the price
# list (model_prices, not an asset) select rows and prices and are left out.
LINEAGE_SOURCES = ("observations_staging", "traces_staging")


@functools.cache
def events_lineage(db: str = DATABASE) -> Lineage:
    """The column lineage of ``events``, read with sqlglot from the SQL a propagation runs: its insert into
    events, through the trace attributes it folds (``trace_attributes_ranked``, whose rank columns decide
    which value wins) and the model prices it resolves (``model_price_matches``)."""
    sql = sql_module("propagation", db)
    read = ("observations_staging", "traces_staging", "ingest_ledger", "trace_attributes_ranked")
    read += ("model_price_matches", "model_prices", "propagation_keys")
    schema = {db: {table: dict.fromkeys(column_names(table), "String") for table in read}}
    through = {
        "trace_attributes_ranked": insert_lineage(
            str(sql.insert_trace_attributes()), schema, column_names("trace_attributes_ranked")
        ),
        "model_price_matches": insert_lineage(str(sql.resolve_prices()), schema),
    }
    lineage = insert_lineage(str(sql.insert_simple(every_key_simple=True)), schema)
    return {
        column: sorted(
            {
                source
                for table, name in deps
                for source in (through[table].get(name, []) if table in through else [(table, name)])
                if source[0] in LINEAGE_SOURCES
            }
        )
        for column, deps in lineage.items()
    }
