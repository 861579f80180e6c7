"""The raw-bucket sensor: find new S3 objects cheaply, group them into runs, never launch one twice.

Listing is bounded by the number of ``{project}/{kind}/`` prefixes and by per-tick limits, never by the
size of the bucket:

* every prefix keeps its own cursor (the last key taken). Keys under a prefix sort by the writer's minute
  (``year=/month=/day=/hour=/minute=``), so ``StartAfter=cursor`` finds what is new;
* objects that land late under an older minute are found by re-listing the last ``lookback_minutes`` before
  the cursor and comparing with the keys already taken there (kept in the cursor, pruned as they age);
* anything older than that, or stray keys outside the layout that sort before a cursor, are picked up by
  the reconciliation job, which diffs the whole bucket against the ingest ledger in a run.

A tick takes at most ``max_keys`` objects / ``max_bytes`` and stops listing after ``time_budget_s``; each
run gets at most ``run_objects`` objects / ``run_bytes`` and a ``run_key`` derived from its keys, so a
tick that is replayed (cursor not saved) cannot launch the same batch twice.

The sensor never opens ClickHouse: in embedded mode only runs may hold the chDB folder.
"""

import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import dagster as dg
import orjson

from assets.staging import STAGING_OP_NAME, load_raw_batches
from orchestration.raw_keys import skip_reason
from orchestration.resources import RawBucketS3, SettingsResource

RAW_ASSET_KEY = dg.AssetKey("raw_batches")


@dataclass(frozen=True)
class ScanLimits:
    max_keys: int = 5000
    max_bytes: int = 4 * 1024**3
    run_objects: int = 500
    run_bytes: int = 256 * 1024**2
    lookback_minutes: int = 15
    time_budget_s: float = 40.0


@dataclass
class Found:
    key: str
    size: int


@dataclass
class ScanResult:
    objects: list[Found] = field(default_factory=list)
    cursor: dict[str, Any] = field(default_factory=dict)
    exhausted: bool = True  # False when a limit stopped the tick early


def _minute_of(suffix: str) -> datetime | None:
    parts = suffix.split("/")
    if len(parts) < 6:
        return None
    try:
        values = [int(p.split("=", 1)[1]) for p in parts[:5]]
        return datetime(*values)
    except (IndexError, ValueError):
        return None


def _minute_prefix(moment: datetime) -> str:
    return (
        f"year={moment.year:04d}/month={moment.month:02d}/day={moment.day:02d}/"
        f"hour={moment.hour:02d}/minute={moment.minute:02d}/"
    )


def _list_level(client, bucket: str, prefix: str) -> tuple[list[str], list[Found]]:
    """Sub-prefixes and objects directly under ``prefix`` (delimiter listing)."""
    subs: list[str] = []
    objects: list[Found] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        subs += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        objects += [Found(o["Key"], o["Size"]) for o in page.get("Contents", [])]
    return subs, objects


def _list_after(
    client, bucket: str, prefix: str, start_after: str, limit: int, stop_before: str | None = None
):
    kwargs = {"Bucket": bucket, "Prefix": prefix, "PaginationConfig": {"PageSize": min(1000, max(limit, 1))}}
    if start_after:
        kwargs["StartAfter"] = start_after
    taken = 0
    for page in client.get_paginator("list_objects_v2").paginate(**kwargs):
        for obj in page.get("Contents", []):
            if stop_before is not None and obj["Key"] > stop_before:
                return
            yield Found(obj["Key"], obj["Size"])
            taken += 1
            if taken >= limit:
                return


def scan(client, bucket: str, root: str, cursor: dict[str, Any], limits: ScanLimits) -> ScanResult:
    """Find objects not taken before; returns them with the advanced cursor (the input is not modified)."""
    started = time.monotonic()
    state: dict[str, Any] = orjson.loads(orjson.dumps(cursor)) if cursor else {}
    prefixes: dict[str, Any] = state.setdefault("prefixes", {})
    strays: list[str] = state.setdefault("strays", [])
    result = ScanResult(cursor=state)
    budget = {"keys": limits.max_keys, "bytes": limits.max_bytes}

    def take(found: Found) -> bool:
        if budget["keys"] <= 0 or budget["bytes"] <= 0 or time.monotonic() - started > limits.time_budget_s:
            result.exhausted = False
            return False
        if skip_reason(found.key, root):  # Langfuse's evals/ snapshots and the like: passed, never loaded
            return True
        result.objects.append(found)
        budget["keys"] -= 1
        budget["bytes"] -= found.size
        return True

    # Level 1 and 2: projects, then kinds; objects directly at these levels break the layout (strays).
    projects, root_objects = _list_level(client, bucket, root)
    kind_prefixes: list[str] = []
    stray_objects = list(root_objects)
    for project in projects:
        kinds, objects = _list_level(client, bucket, project)
        kind_prefixes += kinds
        stray_objects += objects
    seen_strays = set(strays)
    for found in stray_objects:
        if found.key not in seen_strays and take(found):
            strays.append(found.key)
    state["strays"] = [k for k in strays if k in {o.key for o in stray_objects}]

    for prefix in sorted(kind_prefixes):
        entry = prefixes.setdefault(prefix, {"after": "", "recent": []})
        recent = set(entry["recent"])
        # late arrivals: re-list the lookback window before the cursor
        after_minute = _minute_of(entry["after"][len(prefix) :]) if entry["after"] else None
        if after_minute is not None:
            low = prefix + _minute_prefix(after_minute - timedelta(minutes=limits.lookback_minutes))
            for found in _list_after(
                client, bucket, prefix, low, limits.max_keys * 4, stop_before=entry["after"]
            ):
                suffix = found.key[len(prefix) :]
                if suffix not in recent and found.key <= entry["after"]:
                    if not take(found):
                        break
                    recent.add(suffix)
        # new keys after the cursor
        for found in _list_after(client, bucket, prefix, entry["after"], max(budget["keys"], 0) + 1):
            if not take(found):
                break
            entry["after"] = found.key
            recent.add(found.key[len(prefix) :])
        newest = _minute_of(entry["after"][len(prefix) :]) if entry["after"] else None
        if newest is not None:
            horizon = newest - timedelta(minutes=limits.lookback_minutes)
            recent = {s for s in recent if (_minute_of(s) or newest) >= horizon}
        entry["recent"] = sorted(recent)
    return result


def plan_runs(objects: list[Found], limits: ScanLimits) -> list[list[Found]]:
    runs: list[list[Found]] = []
    current: list[Found] = []
    size = 0
    for found in objects:
        if current and (len(current) >= limits.run_objects or size + found.size > limits.run_bytes):
            runs.append(current)
            current, size = [], 0
        current.append(found)
        size += found.size
    if current:
        runs.append(current)
    return runs


def run_key_for(keys: list[str]) -> str:
    return "raw-" + hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:32]


@dg.sensor(
    name="raw_bucket_sensor",
    job=load_raw_batches,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Finds new raw batches in the S3 bucket and launches staging loads (bounded per tick).",
)
def raw_bucket_sensor(
    context: dg.SensorEvaluationContext, s3: RawBucketS3, settings: SettingsResource
) -> dg.SensorResult:
    cursor = orjson.loads(context.cursor) if context.cursor else {}
    limits = ScanLimits(run_objects=settings.run_max_objects)
    result = scan(s3.get_client(), settings.raw_bucket, settings.raw_prefix, cursor, limits)
    runs = plan_runs(result.objects, limits)
    requests = [
        dg.RunRequest(
            run_key=run_key_for([f.key for f in batch]),
            run_config={"ops": {STAGING_OP_NAME: {"config": {"keys": [f.key for f in batch]}}}},
            tags={"tracehouse/objects": str(len(batch)), "tracehouse/bytes": str(sum(f.size for f in batch))},
        )
        for batch in runs
    ]
    events = []
    if result.objects:
        events.append(
            dg.AssetObservation(
                asset_key=RAW_ASSET_KEY,
                metadata={
                    "new_objects": len(result.objects),
                    "new_bytes": sum(f.size for f in result.objects),
                    "runs_requested": len(requests),
                    "tick_exhausted_listing": result.exhausted,
                },
            )
        )
    skip = None if requests else dg.SkipReason("no new raw objects")
    return dg.SensorResult(
        run_requests=requests,
        cursor=orjson.dumps(result.cursor).decode(),
        asset_events=events,
        skip_reason=skip,
    )
