"""Historic migration: the legacy ReplacingMergeTree tables into ``events``, one frozen part at a time.

``prepare`` copies the legacy tables into ``migration_observations`` / ``migration_traces``, partitioned by
a hash of the trace id and merged to one part per partition, so a part holds every version of every
observation of its traces (and its traces sit in the partition with the same id). Merges are then stopped:
the part list is frozen and becomes the Dagster partitions. ``migrate_part`` reads exactly one part
(``_part``), takes the latest version of each row inside it (no FINAL over the table), joins the latest
trace attributes filtered to that part's traces, appends to ``events`` and removes superseded rows: re-running
a part replaces its rows, and rows the live path already wrote win over older legacy versions.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from orchestration.clickhouse import ClickHouse, query_rows, query_scalar
from orchestration.propagation import LOOKUP_SLACK, as_utc, publish_rows, repair_traces
from orchestration.scores import migrate_scores
from orchestration.settings import DATABASE, LEGACY_DATABASE
from orchestration.sql_macros import sql_module

COPIES = {
    "observations": "migration_observations",
    "traces": "migration_traces",
    "scores": "migration_scores",
}
_HASH = {"observations": "cityHash64(trace_id)", "traces": "cityHash64(id)", "scores": "cityHash64(trace_id)"}
_ORDER = {
    "observations": "(project_id, trace_id, id, event_ts)",
    "traces": "(project_id, id, event_ts)",
    "scores": "(project_id, id, event_ts)",
}


@dataclass
class Part:
    name: str
    bucket: str
    rows: int


@dataclass
class PartResult:
    part: str
    observations: int
    superseded: int
    repaired: int
    missing: int
    duplicates: int
    attributes_lost: int
    seconds: float
    scores: int = 0
    scores_missing: int = 0  # live (not deleted) legacy scores of the part not in scores_current

    @property
    def verified(self) -> bool:
        return (
            self.missing == 0
            and self.duplicates == 0
            and self.attributes_lost == 0
            and self.scores_missing == 0
        )


def done_parts(ch: ClickHouse, db: str = DATABASE, since: datetime | None = None) -> set[str]:
    """Parts whose latest attempt finished verified (the headless command skips them); with ``since``, only
    those whose latest attempt was recorded at or after it."""
    rows = query_rows(
        ch,
        f"SELECT part FROM {db}.migration_log GROUP BY part HAVING argMax(verified, recorded_at) "  # noqa: S608
        "AND max(recorded_at) >= {since:DateTime64(6, 'UTC')}",
        {"since": since or datetime(1970, 1, 1)},
    )
    return {r["part"] for r in rows}


def _prepared(ch: ClickHouse, db: str) -> bool:
    return bool(query_scalar(ch, f"SELECT count() FROM {db}.migration_state"))  # noqa: S608


def prepare(
    ch: ClickHouse,
    rows_per_part: int = 500_000,
    db: str = DATABASE,
    legacy: str = LEGACY_DATABASE,
) -> list[Part]:
    """Copy and freeze the legacy tables (once; a crashed preparation starts over) and list the parts.

    The scores copy (added after the first migrations ran) is made on its own for a snapshot that lacks it,
    with the snapshot's bucket count, so its partitions line up with the observations' parts."""
    if not _prepared(ch, db):
        source_rows = query_scalar(ch, f"SELECT count() FROM {legacy}.observations")  # noqa: S608
        buckets = max(1, math.ceil(source_rows / rows_per_part))
        for source in COPIES:
            _copy(ch, db, legacy, source, buckets)
        ch.command(
            f"INSERT INTO {db}.migration_state (buckets, source_rows) VALUES ({{b:UInt32}}, {{r:UInt64}})",  # noqa: S608
            {"b": buckets, "r": source_rows},
        )
    elif not query_scalar(
        ch,
        "SELECT count() FROM system.tables WHERE database = {db:String} AND name = 'migration_scores'",
        {"db": db},
    ):
        buckets = query_scalar(ch, f"SELECT max(buckets) FROM {db}.migration_state")  # noqa: S608
        _copy(ch, db, legacy, "scores", buckets)
    for copy in COPIES.values():
        ch.command(
            f"SYSTEM STOP MERGES {db}.{copy}"
        )  # frozen (one part per partition leaves nothing to merge)
    return parts(ch, db)


def _copy(ch: ClickHouse, db: str, legacy: str, source: str, buckets: int) -> None:
    """``legacy.source`` into its migration copy, partitioned by trace hash and merged to one part each."""
    copy = COPIES[source]
    ch.command(f"DROP TABLE IF EXISTS {db}.{copy} SYNC")
    ch.command(
        f"CREATE TABLE {db}.{copy} ENGINE = MergeTree PARTITION BY {_HASH[source]} % {buckets} "  # noqa: S608
        f"ORDER BY {_ORDER[source]} EMPTY AS SELECT * FROM {legacy}.{source}"
    )
    ch.command(
        f"INSERT INTO {db}.{copy} SELECT * FROM {legacy}.{source} "  # noqa: S608
        f"SETTINGS max_partitions_per_insert_block = {buckets + 1}"
    )
    ch.command(f"OPTIMIZE TABLE {db}.{copy} FINAL")  # one part per partition


def parts(ch: ClickHouse, db: str = DATABASE) -> list[Part]:
    rows = query_rows(
        ch,
        "SELECT name, partition_id, rows FROM system.parts WHERE database = {db:String} "
        "AND table = 'migration_observations' AND active ORDER BY name",
        {"db": db},
    )
    return [Part(r["name"], r["partition_id"], r["rows"]) for r in rows]


def migrate_part(ch: ClickHouse, part: str, db: str = DATABASE, source_db: str | None = None) -> PartResult:
    """Migrate one part; safe to repeat (rows of a previous attempt are superseded, not duplicated).

    ``source_db`` holds the frozen copies when they are not in ``db`` (a replay's shadow database)."""
    started = time.perf_counter()
    source_db = source_db or db
    found = {p.name: p for p in parts(ch, source_db)}
    if part not in found:
        raise ValueError(
            f"part {part!r} is not an active part of {source_db}.migration_observations (was it re-prepared?)"
        )
    sql = sql_module("migration", db, source_db)
    pid = f"legacy-{uuid.uuid4().hex}"
    params: dict = {"part": part, "bucket": found[part].bucket, "pid": pid}
    ch.command(sql.insert_part_keys(), params)
    earliest = query_scalar(
        ch,
        f"SELECT min(start_time) FROM {source_db}.migration_observations WHERE _part = {{part:String}}",  # noqa: S608
        params,
    )
    params["lookup_from"] = as_utc(earliest) - LOOKUP_SLACK if earliest else datetime(1970, 1, 1)
    ch.command(sql.insert_trace_attributes(), params)
    ch.command(sql_module("propagation", db).record_trace_changes(), params)
    ch.command(sql_module("propagation", db).mark_in_flight(), params)
    ch.command(sql.insert_part(), params)
    superseded = publish_rows(ch, db, params)
    # rows the live path wrote before these legacy trace attributes were known
    repaired, _ = repair_traces(ch, pid, db)
    scores = migrate_scores(ch, params["bucket"], db, source_db)
    check = query_rows(ch, sql.verify_part(), params)[0]
    observations = query_scalar(
        ch,
        f"SELECT count() FROM {db}.propagation_keys WHERE propagation_id = {{pid:String}} "  # noqa: S608
        "AND kind = 'observation'",
        params,
    )
    result = PartResult(
        part=part,
        observations=observations,
        superseded=superseded,
        repaired=repaired,
        missing=check["missing"],
        duplicates=check["duplicates"],
        attributes_lost=check["attributes_lost"],
        seconds=time.perf_counter() - started,
        scores=scores,
        scores_missing=check["scores_missing"],
    )
    ch.command(
        f"INSERT INTO {db}.migration_log (part, observations, superseded, verified, seconds) VALUES "  # noqa: S608
        "({part:String}, {n:UInt64}, {s:UInt64}, {v:Bool}, {t:Float64})",
        {
            "part": part,
            "n": result.observations,
            "s": result.superseded,
            "v": result.verified,
            "t": result.seconds,
        },
    )
    return result
