"""Propagation throughput: observations/s per window size, against histories of different sizes.

Staging rows and history are generated inside ClickHouse (``numbers()``), so the figure is the
propagation alone. History rows (with their traces' attributes) are spread over 30 days that end
``HISTORY_ENDS_DAYS_AGO``; each measured window's observations start on a day of their own, three days after
the previous window's and after the history. A window's lookups reach from one day before its earliest start
(``LOOKUP_SLACK``) to the present, which then holds no earlier window, so each window meets the same recent
data, and a larger history costs only what the history itself costs (index, parts, trace attributes): what
the "history ×10" figure is meant to isolate.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime

from orchestration.clickhouse import ClickHouse, query_scalar
from orchestration.propagation import propagate_window, server_now
from orchestration.settings import DATABASE
from orchestration.sql_macros import sql_module

HISTORY_ENDS_DAYS_AGO = 40
WINDOW_DAYS_APART = 3
SETTLE_QUIET_SECONDS = 3.0

_PAYLOAD = """concat('{"messages":[{"role":"user","content":"', randomPrintableASCII(400), '"}]}')"""


@dataclass
class PropagationFigure:
    window: int
    history: int
    seconds: float
    floor_per_second: float = 0.0  # the floor copy measured at the same history, right after the windows

    @property
    def per_second(self) -> float:
        return self.window / self.seconds


@dataclass
class FloorFigure:
    rows: int
    history: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.rows / self.seconds


def add_history(ch: ClickHouse, rows: int, db: str = DATABASE) -> None:
    """Rows already propagated, 10 observations per trace, ~1 KB each, and their traces' attributes."""
    salt = uuid.uuid4().hex[:8]
    ends_ms = HISTORY_ENDS_DAYS_AGO * 86_400_000
    ch.command(
        f"""
        INSERT INTO {db}.events (project_id, trace_id, id, type, name, start_time, end_time, level,
            environment, input, output, provided_model_name, usage_details, cost_details, total_cost,
            trace_name, user_id, session_id, tags, event_ts, source_version, propagated_at, propagation_id)
        SELECT 'bench-' || toString(number % 4), 'h{salt}' || hex(intDiv(number, 10)),
            'h{salt}' || hex(number),
            ['SPAN', 'GENERATION', 'EVENT'][number % 3 + 1], 'step-' || toString(number % 20),
            now64(6) - toIntervalMillisecond(number * 2592000000 / {rows} + {ends_ms}) AS st,
            st + toIntervalMillisecond(number % 5000), 'DEFAULT', 'production',
            {_PAYLOAD}, {_PAYLOAD}, 'gpt-4o',
            map('input', number % 1000, 'output', number % 300),
            if(number % 2 = 0, map(), map('total', (number % 1000) / 1e5)),  -- half priced at propagation
            if(number % 2 = 0, NULL, (number % 1000) / 1e5), 'agent-run', 'user-' || toString(number % 5000),
            'sess-' || toString(intDiv(number, 50)), ['bench'], st, st, st, 'history-{salt}'
        FROM numbers({rows})
        """  # noqa: S608
    )
    ch.command(
        sql_module("propagation", db).fold_trace_attributes(
            "SELECT project_id, trace_id, trace_name AS name, user_id, session_id, tags, release, "  # noqa: S608
            "trace_version AS version, toString(environment) AS environment, trace_metadata AS metadata, "
            "toInt8(public) AS public, toInt8(bookmarked) AS bookmarked, '' AS input, '' AS output, "
            "start_time AS first_start, "
            f"start_time AS last_start, event_ts, event_ts AS committed_at, event_ts AS uploaded_at, "
            f"'' AS source_key FROM {db}.events "
            f"WHERE propagation_id = 'history-{salt}'"
        )
    )


def add_window(ch: ClickHouse, rows: int, db: str = DATABASE, objects: int = 200, days_ago: int = 0) -> str:
    """One window of committed loads: ``rows`` observations in ``objects`` objects, trace attrs on spans,
    starting ``days_ago`` days before now. Returns its load id."""
    load = uuid.uuid4().hex
    ago_ms = days_ago * 86_400_000
    ch.command(
        f"""
        INSERT INTO {db}.observations_staging (project_id, trace_id, id, type, name, start_time, end_time,
            level, environment, input, output, provided_model_name, usage_details, cost_details, total_cost,
            trace_name, user_id, session_id, tags, is_update, source_format, source_key, load_id, event_ts)
        SELECT 'bench-' || toString(number % 4), 'w{load[:8]}' || hex(intDiv(number, 10)),
            'w{load[:8]}' || hex(number),
            ['SPAN', 'GENERATION', 'EVENT'][number % 3 + 1], 'step-' || toString(number % 20),
            now64(6) - toIntervalMillisecond(number % 60000 + {ago_ms}) AS st,
            st + toIntervalMillisecond(number % 5000),
            '', 'production', {_PAYLOAD}, {_PAYLOAD}, 'gpt-4o',
            map('input', number % 1000, 'output', number % 300),
            if(number % 2 = 0, map(), map('total', (number % 1000) / 1e5)),  -- half priced at propagation
            if(number % 2 = 0, NULL, (number % 1000) / 1e5), 'agent-run', 'user-' || toString(number % 5000),
            'sess-' || toString(intDiv(number, 50)), ['bench'], false, 'otlp_json',
            'bench/{load}/' || toString(number % {objects}), '{load}', st
        FROM numbers({rows})
        """  # noqa: S608
    )
    ch.command(
        f"""
        INSERT INTO {db}.ingest_ledger (source_key, project_id, format, status, observations, load_id)
        SELECT 'bench/{load}/' || toString(number), 'bench', 'otlp_json', 'loaded', {rows} / {objects},
            '{load}'
        FROM numbers({objects})
        """  # noqa: S608
    )
    return load


def settle(ch: ClickHouse, timeout: float = 600.0, quiet: float | None = None) -> float:
    """Wait until no background merge has run for ``quiet`` seconds (a live table is not merging 9M
    just-inserted rows; one merge finishing often schedules the next, so one empty look is not enough)."""
    quiet = SETTLE_QUIET_SECONDS if quiet is None else quiet
    started = time.perf_counter()
    quiet_since = None
    while time.perf_counter() - started < timeout:
        if query_scalar(ch, "SELECT count() FROM system.merges"):
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.perf_counter()
        elif time.perf_counter() - quiet_since >= quiet:
            break
        time.sleep(0.5)
    return time.perf_counter() - started


def events_rows(ch: ClickHouse, db: str = DATABASE) -> int:
    return query_scalar(ch, f"SELECT count() FROM {db}.events")  # noqa: S608


def _time_on_new_window(
    ch: ClickHouse, rows: int, days_ago: int, work: Callable[[str, datetime, datetime], None]
) -> tuple[int, float]:
    """(events rows before, seconds of ``work(load_id, lo, hi)``) on a window of ``rows`` just committed in
    ``[lo, hi)``, once merges have settled."""
    history = events_rows(ch)
    lo = server_now(ch)
    load = add_window(ch, rows, days_ago=days_ago)
    hi = server_now(ch)
    settle(ch)
    started = time.perf_counter()
    work(load, lo, hi)
    return history, time.perf_counter() - started


def measure_window(ch: ClickHouse, rows: int, days_ago: int = 0) -> PropagationFigure:
    def propagate(_load: str, lo: datetime, hi: datetime) -> None:
        result = propagate_window(ch, lo, hi, run_id="bench")
        assert result.observations == rows, (result.observations, rows)

    history, seconds = _time_on_new_window(ch, rows, days_ago, propagate)
    return PropagationFigure(window=rows, history=history, seconds=seconds)


def measure_floor(ch: ClickHouse, rows: int, days_ago: int = 0) -> FloorFigure:
    """The same kind of window copied from staging into events as it is (the events_core view runs): no
    merge, no join, no bookkeeping. What writing the rows costs on this machine at this moment."""

    def copy(load: str, _lo: datetime, _hi: datetime) -> None:
        ch.command(
            f"INSERT INTO {DATABASE}.events (project_id, trace_id, id, type, name, start_time, input, "  # noqa: S608
            "output, usage_details, cost_details, total_cost, user_id, session_id, tags, event_ts, "
            "source_version, propagated_at, propagation_id) SELECT project_id, trace_id, id, type, name, "
            "ifNull(start_time, event_ts), input, output, usage_details, cost_details, total_cost, user_id, "
            f"session_id, tags, event_ts, event_ts, event_ts, 'floor' FROM {DATABASE}.observations_staging "
            "WHERE load_id = {load:String} SETTINGS parallel_view_processing = 1",
            {"load": load},
        )

    history, seconds = _time_on_new_window(ch, rows, days_ago, copy)
    return FloorFigure(rows=rows, history=history, seconds=seconds)


def run(
    ch: ClickHouse,
    windows: tuple[int, ...],
    histories: tuple[int, ...],
    progress: Callable[[str], None] = lambda _m: None,
    repeats: int = 3,
) -> tuple[list[PropagationFigure], list[FloorFigure]]:
    """For each history size (growing), propagate windows of each size and time them: the median of
    ``repeats`` windows for every size but the largest (a few seconds each, so noise matters), one of that.
    Then the floor: a copy of as many rows as the largest window, at the same history, a minute later (on a
    shared virtual machine the cost of writing moves between runs, so each ratio compares neighbours)."""
    figures: list[PropagationFigure] = []
    floors: list[FloorFigure] = []
    days = iter(range(HISTORY_ENDS_DAYS_AGO - WINDOW_DAYS_APART, -1, -WINDOW_DAYS_APART))
    for history in histories:
        missing = history - events_rows(ch)
        if missing > 0:
            progress(f"history → {history:,} rows")
            add_history(ch, missing)
            settle(ch)
        at_history = []
        for window in windows:
            runs = []
            for _ in range(repeats if window < max(windows) else 1):
                progress(f"window {window:,} over {events_rows(ch):,}")
                runs.append(measure_window(ch, window, days_ago=_next_day(days)))
            at_history.append(sorted(runs, key=lambda f: f.seconds)[len(runs) // 2])
        progress(f"floor: copy {max(windows):,} rows over {events_rows(ch):,}")
        floors.append(measure_floor(ch, max(windows), days_ago=_next_day(days)))
        figures += [replace(f, floor_per_second=floors[-1].per_second) for f in at_history]
    return figures, floors


def _next_day(days: Iterator[int]) -> int:
    """Each window starts on a day of its own (see the module docstring)."""
    day = next(days, None)
    assert day is not None, "more windows than days between the history and now"
    return day
