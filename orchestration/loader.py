"""Load raw S3 objects into the staging tables, exactly once, quarantining what cannot be read.

Protocol per group of objects (one group is at most ``group_bytes`` of raw data):

1. objects whose latest ledger state is ``loaded`` or ``quarantined`` are skipped (re-runs load nothing
   twice); objects left ``started`` by a crashed attempt have their partial staging rows deleted first;
2. the group is fetched (S3 GETs in parallel threads) and parsed; a bad object becomes a quarantine
   outcome with its reason, the others go on;
3. ledger rows ``started`` (with a fresh ``load_id``) are written, then the staging rows (tagged with that
   ``load_id``), then one ledger row per object: ``loaded`` with row counts or ``quarantined`` with the
   reason (the quarantine table is fed from that same insert by a materialized view).

A crash anywhere leaves every object either committed or ``started``; the next attempt cleans and
reloads the ``started`` ones. Propagation reads only rows whose ``(source_key, load_id)`` the ledger
committed, so even two racing loads of one object (possible only against a ClickHouse server) cannot
double count.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
from botocore.exceptions import ClientError

from orchestration.clickhouse import ClickHouse, query_rows
from orchestration.parsers import BadObject, ParsedObject, parse_object
from orchestration.parsers.common import OBSERVATION_SCHEMA, SCORE_SCHEMA, TRACE_SCHEMA, to_arrow
from orchestration.raw_keys import BadKey, parse_key
from orchestration.settings import DATABASE, Settings

STAGING_TABLES = ("observations_staging", "traces_staging", "scores_staging")


@dataclass
class Outcome:
    key: str
    status: str  # loaded | quarantined | skipped
    reason: str = ""
    observations: int = 0
    traces: int = 0
    scores: int = 0
    size: int = 0
    etag: str = ""
    project_id: str = ""
    format: str = ""


@dataclass
class LoadReport:
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def rows(self, table: str) -> int:
        return sum(getattr(o, table) for o in self.outcomes if o.status == "loaded")

    @property
    def bytes_loaded(self) -> int:
        return sum(o.size for o in self.outcomes if o.status == "loaded")

    @property
    def quarantined(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "quarantined"]


@dataclass
class _Fetched:
    outcome: Outcome
    parsed: ParsedObject | None = None


def ledger_states(ch: ClickHouse, keys: list[str], db: str = DATABASE) -> dict[str, str]:
    if not keys:
        return {}
    rows = query_rows(
        ch,
        f"SELECT source_key, toString(argMax(status, recorded_at)) AS status FROM {db}.ingest_ledger "  # noqa: S608
        "WHERE source_key IN {keys:Array(String)} GROUP BY source_key",
        {"keys": keys},
    )
    return {r["source_key"]: r["status"] for r in rows}


def _fetch_and_parse(s3, bucket: str, key: str, settings: Settings) -> _Fetched:
    outcome = Outcome(key=key, status="quarantined")
    try:
        raw = parse_key(key, settings.raw_prefix)
    except BadKey as exc:
        outcome.reason = str(exc)
        return _Fetched(outcome)
    outcome.project_id, outcome.format = raw.project_id, raw.format
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            outcome.reason = "object was listed but no longer exists in the bucket"
            return _Fetched(outcome)
        raise
    body = response["Body"]
    outcome.size, outcome.etag = int(response.get("ContentLength") or 0), response.get("ETag", "").strip('"')
    try:
        if outcome.size > settings.max_object_bytes:
            outcome.reason = (
                f"object is {outcome.size} bytes, over the {settings.max_object_bytes}-byte limit"
            )
            return _Fetched(outcome)
        data = body.read(settings.max_object_bytes + 1)
    finally:
        body.close()
    try:
        parsed = parse_object(
            raw, data, max_object=settings.max_object_bytes, max_record=settings.max_record_bytes
        )
    except BadObject as exc:
        outcome.reason = str(exc)
        return _Fetched(outcome)
    except Exception as exc:  # a parser bug must not lose the object or stop the batch
        outcome.reason = f"unexpected {type(exc).__name__} while parsing: {exc}"[:2000]
        return _Fetched(outcome)
    outcome.status = "loaded"
    outcome.observations, outcome.traces, outcome.scores = (
        parsed.observation_count,
        len(parsed.traces),
        len(parsed.scores),
    )
    return _Fetched(outcome, parsed)


def _with_load_id(table: pa.Table, load_id: str) -> pa.Table:
    return table.append_column("load_id", pa.array([load_id] * table.num_rows, pa.string()))


def _ledger_table(outcomes: Iterable[Outcome], status: str | None, run_id: str, load_id: str) -> pa.Table:
    rows = [
        {
            "source_key": o.key,
            "etag": o.etag,
            "size": o.size,
            "project_id": o.project_id,
            "format": o.format,
            "status": status or o.status,
            "observations": o.observations if status is None else 0,
            "traces": o.traces if status is None else 0,
            "scores": o.scores if status is None else 0,
            "reason": o.reason if status is None else "",
            "run_id": run_id,
            "load_id": load_id,
        }
        for o in outcomes
    ]
    return pa.Table.from_pylist(rows)


def _bounded_map(pool: ThreadPoolExecutor, fn: Callable, items: list, in_flight: int) -> Iterator:
    """``pool.map`` holding at most ``in_flight`` results, so memory does not grow with the batch."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= in_flight:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _groups(fetched: Iterator[_Fetched], group_bytes: int) -> Iterator[list[_Fetched]]:
    group: list[_Fetched] = []
    size = 0
    for item in fetched:
        group.append(item)
        size += item.outcome.size
        if size >= group_bytes:
            yield group
            group, size = [], 0
    if group:
        yield group


def _parsed_tables(group: list[_Fetched]) -> dict[str, pa.Table]:
    observations = [
        to_arrow([r for f in group if f.parsed for r in f.parsed.observations], OBSERVATION_SCHEMA)
    ]
    observations += [f.parsed.arrow_observations for f in group if f.parsed and f.parsed.arrow_observations]
    return {
        "observations_staging": pa.concat_tables(observations),
        "traces_staging": to_arrow([r for f in group if f.parsed for r in f.parsed.traces], TRACE_SCHEMA),
        "scores_staging": to_arrow([r for f in group if f.parsed for r in f.parsed.scores], SCORE_SCHEMA),
    }


def _bad_rows_to_quarantine(group: list[_Fetched]) -> None:
    """A value that fails Arrow conversion quarantines its own object only (found by retrying one by one)."""
    for item in group:
        if item.parsed is None:
            continue
        try:
            _parsed_tables([item])
        except BadObject as exc:
            item.outcome.status, item.outcome.reason = "quarantined", str(exc)
            item.outcome.observations = item.outcome.traces = item.outcome.scores = 0
            item.parsed = None


def load_objects(
    ch: ClickHouse,
    s3,
    keys: list[str],
    settings: Settings,
    *,
    run_id: str = "",
    db: str = DATABASE,
    group_bytes: int = 64 * 1024 * 1024,
    fetch_threads: int = 8,
    on_object: Callable[[Outcome], None] | None = None,
) -> LoadReport:
    """Load ``keys`` from the raw bucket into staging; see the module docstring for the protocol."""
    report = LoadReport()
    keys = list(dict.fromkeys(keys))
    states = ledger_states(ch, keys, db)
    for key in keys:
        if states.get(key) in ("loaded", "quarantined"):
            report.outcomes.append(Outcome(key=key, status="skipped", reason=f"already {states[key]}"))
    todo = [k for k in keys if states.get(k) not in ("loaded", "quarantined")]
    crashed = [k for k in todo if states.get(k) == "started"]
    if crashed:
        for table in STAGING_TABLES:
            ch.command(
                f"DELETE FROM {db}.{table} WHERE source_key IN {{keys:Array(String)}}",  # noqa: S608
                {"keys": crashed},
            )

    with ThreadPoolExecutor(max_workers=fetch_threads) as pool:
        fetched = _bounded_map(
            pool,
            lambda k: _fetch_and_parse(s3, settings.raw_bucket, k, settings),
            todo,
            in_flight=fetch_threads * 2,
        )
        for group in _groups(fetched, group_bytes):
            load_id = uuid.uuid4().hex
            try:
                tables = _parsed_tables(group)
            except BadObject:
                _bad_rows_to_quarantine(group)
                tables = _parsed_tables(group)
            loaded = [f.outcome for f in group if f.outcome.status == "loaded"]
            if loaded:
                ch.insert_arrow(f"{db}.ingest_ledger", _ledger_table(loaded, "started", run_id, load_id))
                for table, data in tables.items():
                    ch.insert_arrow(f"{db}.{table}", _with_load_id(data, load_id))
            ch.insert_arrow(
                f"{db}.ingest_ledger", _ledger_table([f.outcome for f in group], None, run_id, load_id)
            )
            for item in group:
                report.outcomes.append(item.outcome)
                if on_object:
                    on_object(item.outcome)
    return report
