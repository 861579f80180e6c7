"""Propagation throughput: observations/s per window size, against histories of different sizes.

Staging rows and history are generated inside ClickHouse (``numbers()``), so the figure is the
propagation alone. History rows are spread over the 30 days before the window, as a live deployment's
would be; the window's observations start today.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from orchestration.clickhouse import ClickHouse, query_scalar
from orchestration.propagation import propagate_window, server_now
from orchestration.settings import DATABASE

_PAYLOAD = """concat('{"messages":[{"role":"user","content":"', randomPrintableASCII(400), '"}]}')"""


@dataclass
class PropagationFigure:
    window: int
    history: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.window / self.seconds


def add_history(ch: ClickHouse, rows: int, db: str = DATABASE) -> None:
    """Rows already propagated: 30 days before now, 10 observations per trace, ~1 KB each."""
    salt = uuid.uuid4().hex[:8]
    ch.command(
        f"""
        INSERT INTO {db}.events (project_id, trace_id, id, type, name, start_time, end_time, level,
            environment, input, output, provided_model_name, usage_details, cost_details, total_cost,
            trace_name, user_id, session_id, tags, event_ts, source_version, propagated_at, propagation_id)
        SELECT 'bench-' || toString(number % 4), 'h{salt}' || hex(intDiv(number, 10)),
            'h{salt}' || hex(number),
            ['SPAN', 'GENERATION', 'EVENT'][number % 3 + 1], 'step-' || toString(number % 20),
            now64(6) - toIntervalMillisecond(number * 2592000000 / {rows} + 86400000) AS st,
            st + toIntervalMillisecond(number % 5000), 'DEFAULT', 'production',
            {_PAYLOAD}, {_PAYLOAD}, 'gpt-4o',
            map('input', number % 1000, 'output', number % 300), map('total', (number % 1000) / 1e5),
            (number % 1000) / 1e5, 'agent-run', 'user-' || toString(number % 5000),
            'sess-' || toString(intDiv(number, 50)), ['bench'], st, st, st, 'history'
        FROM numbers({rows})
        """  # noqa: S608
    )


def add_window(ch: ClickHouse, rows: int, db: str = DATABASE, objects: int = 200) -> None:
    """One window of committed loads: ``rows`` observations in ``objects`` objects, trace attrs on spans."""
    load = uuid.uuid4().hex
    ch.command(
        f"""
        INSERT INTO {db}.observations_staging (project_id, trace_id, id, type, name, start_time, end_time,
            level, environment, input, output, provided_model_name, usage_details, cost_details, total_cost,
            trace_name, user_id, session_id, tags, is_update, source_format, source_key, load_id, event_ts)
        SELECT 'bench-' || toString(number % 4), 'w{load[:8]}' || hex(intDiv(number, 10)),
            'w{load[:8]}' || hex(number),
            ['SPAN', 'GENERATION', 'EVENT'][number % 3 + 1], 'step-' || toString(number % 20),
            now64(6) - toIntervalMillisecond(number % 60000) AS st, st + toIntervalMillisecond(number % 5000),
            '', 'production', {_PAYLOAD}, {_PAYLOAD}, 'gpt-4o',
            map('input', number % 1000, 'output', number % 300), map('total', (number % 1000) / 1e5),
            (number % 1000) / 1e5, 'agent-run', 'user-' || toString(number % 5000),
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


def settle(ch: ClickHouse, timeout: float = 600.0) -> float:
    """Wait for background merges to finish (a live table is not merging 9M just-inserted rows)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if not query_scalar(ch, "SELECT count() FROM system.merges"):
            break
        time.sleep(1)
    return time.perf_counter() - started


def events_rows(ch: ClickHouse, db: str = DATABASE) -> int:
    return query_scalar(ch, f"SELECT count() FROM {db}.events")  # noqa: S608


def measure_window(ch: ClickHouse, rows: int) -> PropagationFigure:
    history = events_rows(ch)
    lo = server_now(ch)
    add_window(ch, rows)
    hi = server_now(ch)
    settle(ch)
    started = time.perf_counter()
    result = propagate_window(ch, lo, hi, run_id="bench")
    seconds = time.perf_counter() - started
    assert result.observations == rows, (result.observations, rows)
    return PropagationFigure(window=rows, history=history, seconds=seconds)


def run(
    ch: ClickHouse,
    windows: tuple[int, ...],
    histories: tuple[int, ...],
    progress: Callable[[str], None] = lambda _m: None,
) -> list[PropagationFigure]:
    """For each history size (growing), propagate one window of each size and time it."""
    figures = []
    for history in histories:
        missing = history - events_rows(ch)
        if missing > 0:
            progress(f"history → {history:,} rows")
            add_history(ch, missing)
            settle(ch)
        for window in windows:
            progress(f"window {window:,} over {events_rows(ch):,}")
            figures.append(measure_window(ch, window))
    return figures
