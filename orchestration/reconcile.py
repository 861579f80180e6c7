"""Diff the whole raw bucket against the ingest ledger: the guarantee that no object is ever missed.

The sensor is fast and bounded; this is thorough. It pages through every key under the raw prefix and
yields, a page at a time, the keys the ledger has not committed (never seen, or left ``started``) and those
whose object was overwritten after it was committed (another ETag than the one loaded).
Memory stays bounded by the page size, whatever the size of the bucket.
"""

from __future__ import annotations

from collections.abc import Iterator

from orchestration.clickhouse import ClickHouse
from orchestration.loader import ledger_states, overwritten
from orchestration.settings import DATABASE, Settings


def pending_keys(
    ch: ClickHouse, s3, settings: Settings, page_size: int = 1000, db: str = DATABASE
) -> Iterator[dict[str, str]]:
    """Pages of ``{key: ETag}`` to load: never committed, left ``started``, or overwritten since committed."""
    paginator = s3.get_paginator("list_objects_v2")
    pages = paginator.paginate(
        Bucket=settings.raw_bucket, Prefix=settings.raw_prefix, PaginationConfig={"PageSize": page_size}
    )
    for page in pages:
        listed = {o["Key"]: o.get("ETag", "").strip('"') for o in page.get("Contents", [])}
        states = ledger_states(ch, list(listed), db)
        todo = {
            key: etag
            for key, etag in listed.items()
            if key not in states or not states[key].committed or overwritten(states[key], etag)
        }
        if todo:
            yield todo
