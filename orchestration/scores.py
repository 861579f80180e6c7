"""Scores of a propagation window into the durable ``scores`` table (one current row per score id).

The same protocol as observations, in miniature (``orchestration/propagation.py``): the latest version of
each score the window's loads touch is inserted whole — staging versions committed before the horizon and
the current row, by event time, upload time and key hash — under a propagation id of its own, hidden from
``scores_current`` until one insert publishes it and retires the rows it supersedes; those are deleted
after. A retry after a crash anywhere, or a re-run of the window, converges on one row per score.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from orchestration.clickhouse import ClickHouse, query_scalar
from orchestration.propagation import sql_module
from orchestration.settings import DATABASE


def propagate_scores(
    ch: ClickHouse, lo: datetime, hi: datetime, horizon: datetime, db: str = DATABASE
) -> int:
    """Write the window's scores; returns how many scores it touched."""
    sql = sql_module("scores", db)
    params = {"lo": lo, "hi": hi, "horizon": horizon, "pid": "s" + uuid.uuid4().hex}
    touched = query_scalar(ch, sql.count_keys(), params)
    if not touched:
        return 0
    ch.command(sql_module("propagation", db).mark_in_flight(), params)
    ch.command(sql.insert_latest(), params)
    if query_scalar(ch, f"SELECT count() FROM ({sql.superseded()})", params):  # noqa: S608
        ch.command(sql.publish(), params)
        ch.command(
            f"DELETE FROM {db}.scores WHERE (project_id, id, propagation_id) IN ({sql.superseded()})",  # noqa: S608
            params,
        )
    ch.command(f"ALTER TABLE {db}.events_hidden DROP PARTITION {{pid:String}}", params)  # noqa: S608
    return touched
