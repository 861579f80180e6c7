"""Scores into the durable ``scores`` table (one current row per score id): those a propagation window's
loads touch, and those of a frozen legacy part.

The same protocol as observations, in miniature (``orchestration/propagation.py``): the latest version of
each touched score is inserted whole — its new versions and the current row, by event time, upload time
and key hash; a deletion as a tombstone row — under a propagation id of its own, hidden from
``scores_current`` until one insert publishes it and retires the rows it supersedes, which are deleted
after. A retry after a crash anywhere, or a re-run, converges on one row per score.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from orchestration.clickhouse import ClickHouse, query_scalar
from orchestration.settings import DATABASE
from orchestration.sql_macros import sql_module


def propagate_scores(
    ch: ClickHouse, lo: datetime, hi: datetime, horizon: datetime, db: str = DATABASE
) -> int:
    """Write the window's scores; returns how many scores it touched."""
    sql = sql_module("scores", db)
    params = {"lo": lo, "hi": hi, "horizon": horizon, "pid": "s" + uuid.uuid4().hex}
    return _write(ch, db, sql, params, sql.window_keys(), sql.staging_versions())


def migrate_scores(ch: ClickHouse, bucket: str, db: str = DATABASE, source_db: str | None = None) -> int:
    """Write the scores of legacy partition ``bucket`` (deletions applied); returns how many it touched."""
    sql = sql_module("scores", db, source_db)
    params = {"bucket": bucket, "pid": "legacy-s" + uuid.uuid4().hex}
    return _write(ch, db, sql, params, sql.part_keys(), sql.legacy_versions())


def _write(ch: ClickHouse, db: str, sql: Any, params: dict, keys: str, versions: str) -> int:
    touched = query_scalar(ch, sql.count_keys(keys), params)
    if not touched:
        return 0
    ch.command(sql_module("propagation", db).mark_in_flight(), params)
    ch.command(sql.insert_latest(versions, keys), params)
    superseded = query_scalar(ch, f"SELECT count() FROM ({sql.superseded(keys)})", params)  # noqa: S608
    if superseded:
        ch.command(sql.publish(keys), params)
        ch.command(sql.record_changes(keys), params)  # the superseded rows' days too, while they exist
        ch.command(
            f"DELETE FROM {db}.scores WHERE (project_id, id, propagation_id) IN ({sql.superseded(keys)})",  # noqa: S608
            params,
        )
    ch.command(f"ALTER TABLE {db}.events_hidden DROP PARTITION {{pid:String}}", params)  # noqa: S608
    if not superseded:
        ch.command(sql.record_changes(keys), params)
    return touched
