"""Replay ``events`` from its sources (blue/green), for when staging-level logic changed (parsers, mapping,
propagation). ``events`` is made of two sources, and a replay rebuilds both into a shadow database: the
legacy parts the historic migration has verified (migrated again from their frozen copies, first, so raw
versions of the same observations merge on top of them as they do live) and the whole raw bucket (S3 is the
source of truth), loaded and propagated. The shadow's ``events``, ``events_core``,
``trace_attributes_ranked`` and ``scores`` are then swapped in with ``EXCHANGE TABLES`` (the views follow
the table names). Work the live path did while the shadow was being built — loads committed, parts migrated
— is done again on the new tables afterwards; superseded-row cleanup makes that exactly once, and the
migration's record of verified parts stays true. Run it where no propagation runs at the same time (the
``propagation`` pool).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from orchestration.clickhouse import ClickHouse, on_cluster, query_scalar
from orchestration.loader import LoadReport, load_objects
from orchestration.migration import done_parts, migrate_part
from orchestration.propagation import propagate, propagate_window, server_now, watermark
from orchestration.schema import apply_migrations
from orchestration.settings import DATABASE, Settings

SWAPPED = ("events", "events_core", "trace_attributes_ranked", "scores")


@dataclass
class RawReplay:
    objects: int
    loaded: LoadReport
    observations: int
    caught_up: int
    legacy_parts: int = 0  # verified legacy parts migrated again into the new events


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
    ch.command(f"DROP DATABASE IF EXISTS {shadow}{on_cluster(ch)} SYNC")
    apply_migrations(ch, db=shadow, core_truncate_chars=settings.core_truncate_chars)
    started = server_now(ch)  # live work from here on is done again on the new tables after the swap
    legacy = sorted(done_parts(ch, db))
    for part in legacy:
        migrate_part(ch, part, db=shadow, source_db=db)
    keys = _all_keys(s3, settings)
    loaded = load_objects(ch, s3, keys, settings, run_id="replay-from-raw", db=shadow)
    propagate(
        ch,
        delay_seconds=0,
        interval_seconds=settings.propagation_interval_seconds,
        max_windows=10**9,
        db=shadow,
        user_prices=settings.user_prices_path,
    )
    if before_swap:
        before_swap()
    for table in SWAPPED:
        ch.command(f"EXCHANGE TABLES {db}.{table} AND {shadow}.{table}{on_cluster(ch)}")
    caught_up = 0
    mark = watermark(ch, db)
    if mark is not None and mark > started:
        caught_up = propagate_window(
            ch, started, mark, db=db, horizon=mark, run_id="replay-from-raw"
        ).observations
    for part in sorted(done_parts(ch, db, since=started)):  # migrated into the old tables meanwhile
        migrate_part(ch, part, db=db)
    observations = query_scalar(ch, f"SELECT count() FROM {db}.events")  # noqa: S608
    ch.command(f"DROP DATABASE IF EXISTS {shadow}{on_cluster(ch)} SYNC")
    return RawReplay(
        objects=len(keys),
        loaded=loaded,
        observations=observations,
        caught_up=caught_up,
        legacy_parts=len(legacy),
    )
