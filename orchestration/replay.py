"""Replay ``events`` from the raw bucket (blue/green), for when staging-level logic changed (parsers,
mapping, propagation). S3 is the source of truth, so the whole bucket is loaded and propagated into a
shadow database, whose ``events``, ``events_core`` and ``trace_attributes_ranked`` are then swapped in with
``EXCHANGE TABLES`` (the ``events_core`` view follows the table names). Loads the live path committed while
the shadow was being built are propagated again into the new tables afterwards; superseded-row cleanup makes
that exactly once. Run it where no propagation runs at the same time (the ``propagation`` pool).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from orchestration.clickhouse import ClickHouse, query_scalar
from orchestration.loader import LoadReport, load_objects
from orchestration.propagation import propagate, propagate_window, server_now, watermark
from orchestration.schema import apply_migrations
from orchestration.settings import DATABASE, Settings

SWAPPED = ("events", "events_core", "trace_attributes_ranked")


@dataclass
class RawReplay:
    objects: int
    loaded: LoadReport
    observations: int
    caught_up: int


def _all_keys(s3, settings: Settings) -> list[str]:
    keys: list[str] = []
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=settings.raw_bucket, Prefix=settings.raw_prefix
    )
    for page in pages:
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def replay_from_raw(
    ch: ClickHouse,
    s3,
    settings: Settings,
    db: str = DATABASE,
    before_swap: Callable[[], None] | None = None,
) -> RawReplay:
    shadow = f"{db}_replay"
    ch.command(f"DROP DATABASE IF EXISTS {shadow} SYNC")
    apply_migrations(ch, db=shadow)
    started = server_now(ch)  # live loads committed from here on are propagated again after the swap
    keys = _all_keys(s3, settings)
    loaded = load_objects(ch, s3, keys, settings, run_id="replay-from-raw", db=shadow)
    propagate(
        ch,
        delay_seconds=0,
        interval_seconds=settings.propagation_interval_seconds,
        max_windows=10**9,
        db=shadow,
    )
    if before_swap:
        before_swap()
    for table in SWAPPED:
        ch.command(f"EXCHANGE TABLES {db}.{table} AND {shadow}.{table}")
    caught_up = 0
    mark = watermark(ch, db)
    if mark is not None and mark > started:
        caught_up = propagate_window(
            ch, started, mark, db=db, horizon=mark, run_id="replay-from-raw"
        ).observations
    observations = query_scalar(ch, f"SELECT count() FROM {db}.events")  # noqa: S608
    ch.command(f"DROP DATABASE IF EXISTS {shadow} SYNC")
    return RawReplay(objects=len(keys), loaded=loaded, observations=observations, caught_up=caught_up)
