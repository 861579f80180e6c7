"""Summary refresh: what bringing trace_summaries and session_summaries up to date after one propagation
window costs, against rebuilding them whole, at a given history.

History is generated in ClickHouse (``bench/propagation.py``: 10 observations per trace over 30 days); the
models are first built whole (timed: the "whole" figure). Then two windows are propagated and each is
followed by a refresh of both models (timed): one of new traces starting now (the usual case: one new day
partition), and one of new traces that start on a day inside the history (late data: that day's untouched
rows are copied into its new partition). The change log's lookback (``orchestration/refresh.py``) is set to
zero here so each refresh covers its own window only; in production it re-reads ten more minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from bench.propagation import HISTORY_ENDS_DAYS_AGO, add_history, add_window, settle
from orchestration import refresh
from orchestration.clickhouse import ClickHouse, query_scalar
from orchestration.models import load_models
from orchestration.propagation import propagate_window, server_now
from orchestration.settings import DATABASE

MODELS = ("trace_summaries", "session_summaries")
TABLES = ("events", "events_core", "trace_attributes_ranked", "scores", "change_log", "model_builds")


def _timed_builds(ch: ClickHouse, full: bool) -> dict[str, dict[str, Any]]:
    models = load_models()
    figures = {}
    for name in MODELS:
        started = time.perf_counter()
        result = refresh.build(ch, models[name], full=full)
        figures[name] = {
            "seconds": round(time.perf_counter() - started, 2),
            "rows": result.rows,
            "changed_keys": result.changed_keys,
            "partitions": len(result.partitions),
            "whole": result.full,
        }
    return figures


def run(ch: ClickHouse, history: int, window: int, say: Callable[[str], None]) -> dict[str, Any]:
    for table in TABLES:
        ch.command(f"TRUNCATE TABLE {DATABASE}.{table}")
    say(f"summaries: {history:,} observations of history")
    add_history(ch, history)
    settle(ch)
    say("summaries: whole build")
    whole = _timed_builds(ch, full=True)
    saved, refresh.LOOKBACK = refresh.LOOKBACK, timedelta(0)
    try:
        windows = {}
        for label, days_ago in (
            ("new traces, today", 0),
            ("late traces, a day of history", HISTORY_ENDS_DAYS_AGO + 5),
        ):
            lo = server_now(ch)
            add_window(ch, window, days_ago=days_ago)
            hi = server_now(ch)
            propagate_window(ch, lo, hi, run_id="bench")
            settle(ch)
            say(f"summaries: refresh after a window of {window:,} observations ({label})")
            windows[label] = _timed_builds(ch, full=False)
    finally:
        refresh.LOOKBACK = saved
    whole_seconds = sum(f["seconds"] for f in whole.values())
    return {
        "history": query_scalar(ch, f"SELECT count() FROM {DATABASE}.events"),  # noqa: S608
        "window": window,
        "whole": whole,
        "refresh": windows,
        "refresh_share_of_whole": {
            label: round(sum(f["seconds"] for f in figures.values()) / whole_seconds, 3)
            for label, figures in windows.items()
        },
    }
