"""Load raw S3 objects into the staging tables, exactly once, quarantining what cannot be read.

Protocol per group of objects (one group is at most ``group_bytes`` of raw data):

1. objects whose latest ledger state is ``loaded`` or ``quarantined`` are skipped (re-runs load nothing
   twice); objects left ``started`` by a crashed attempt have their partial staging rows deleted first;
2. the group is fetched (S3 GETs in parallel threads) and parsed into Arrow (in a pool of worker
   processes, one per core: parsing is CPU work the GIL would serialise); a bad object becomes a
   quarantine outcome with its reason, the others go on. OTLP/JSON objects are only decoded: ClickHouse
   maps them (``orchestration/otlp_json.py``), and the few it does not take are parsed in Python after;
3. ledger rows ``started`` (with a fresh ``load_id``) are written, then the staging rows (tagged with that
   ``load_id``), then one ledger row per object: ``loaded`` with row counts or ``quarantined`` with the
   reason (the quarantine table is fed from that same insert by a materialized view).

A crash anywhere leaves every object either committed or ``started``; the next attempt cleans and
reloads the ``started`` ones. Propagation reads only rows whose ``(source_key, load_id)`` the ledger
committed, so even two racing loads of one object (possible only against a ClickHouse server) cannot
double count.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing
from dataclasses import dataclass, field

import pyarrow as pa
from botocore.exceptions import ClientError

from orchestration import otlp_json
from orchestration.clickhouse import ClickHouse, query_rows
from orchestration.parsers import BadObject, decode_object, parse_object
from orchestration.parsers.common import OBSERVATION_SCHEMA, SCORE_SCHEMA, TRACE_SCHEMA, to_arrow
from orchestration.raw_keys import BadKey, RawKey, parse_key
from orchestration.settings import DATABASE, Settings

STAGING_TABLES = ("observations_staging", "traces_staging", "scores_staging")


@dataclass
class Outcome:
    key: str
    status: str  # loaded | quarantined | skipped; "mapping" while ClickHouse maps it
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
    notes: list[str] = field(default_factory=list)  # what an operator should know (a fast path that failed)

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
    tables: dict[str, pa.Table] = field(default_factory=dict)  # staging table -> rows of this object
    mapping: otlp_json.RawObject | None = None  # decoded OTLP/JSON for ClickHouse to map
    data: bytes = b""  # the object as fetched, for Python if ClickHouse does not take it

    @property
    def weight(self) -> int:
        """Bytes this object holds in memory while its group loads."""
        return len(self.mapping.data) if self.mapping else self.outcome.size


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


def _fetch_and_parse(s3, bucket: str, key: str, settings: Settings, parsers: ParserPool) -> _Fetched:
    """GET one object (in a thread) and parse it (in ``parsers``)."""
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
    if raw.format == "otlp_json" and settings.otlp_json_in_clickhouse:
        try:
            decoded = decode_object(raw, data, settings.max_object_bytes)
        except BadObject as exc:
            outcome.reason = str(exc)
            return _Fetched(outcome)
        outcome.status = "mapping"
        return _Fetched(outcome, mapping=otlp_json.RawObject(key, raw.project_id, decoded), data=data)
    return _parsed(outcome, _parse(parsers, raw, data, _limits(settings)))


def _limits(settings: Settings) -> tuple[int, int]:
    return settings.max_object_bytes, settings.max_record_bytes


def _parsed(outcome: Outcome, result: tuple[str, dict[str, bytes]]) -> _Fetched:
    reason, payload = result
    if reason:
        outcome.status, outcome.reason = "quarantined", reason
        return _Fetched(outcome)
    tables = {name: pa.ipc.open_stream(blob).read_all() for name, blob in payload.items()}
    outcome.status = "loaded"
    outcome.observations, outcome.traces, outcome.scores = (
        tables["observations_staging"].num_rows,
        tables["traces_staging"].num_rows,
        tables["scores_staging"].num_rows,
    )
    return _Fetched(outcome, tables)


def _parse(parsers: ParserPool, raw: RawKey, data: bytes, limits: tuple[int, int]):
    try:
        return parsers.run(parse_to_arrow, raw, data, limits)
    except BrokenProcessPool:
        return "the parser process died on this object twice (out of memory or a crash)", {}


def parse_to_arrow(raw: RawKey, data: bytes, limits: tuple[int, int]) -> tuple[str, dict[str, bytes]]:
    """Parse one object into Arrow IPC streams per staging table, or give the reason it is bad.

    Runs in a worker process, so it returns only picklable values; conversion to Arrow happens here too,
    so a value that does not fit its column quarantines its own object and nothing else.
    """
    max_object, max_record = limits
    try:
        parsed = parse_object(raw, data, max_object=max_object, max_record=max_record)
        observations = to_arrow(parsed.observations, OBSERVATION_SCHEMA)
        if parsed.arrow_observations is not None:
            observations = pa.concat_tables([observations, parsed.arrow_observations])
        tables = {
            "observations_staging": observations,
            "traces_staging": to_arrow(parsed.traces, TRACE_SCHEMA),
            "scores_staging": to_arrow(parsed.scores, SCORE_SCHEMA),
        }
    except BadObject as exc:
        return str(exc), {}
    except Exception as exc:  # a parser bug must not lose the object or stop the batch
        return f"unexpected {type(exc).__name__} while parsing: {exc}"[:2000], {}
    payload = {}
    for name, table in tables.items():
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        payload[name] = sink.getvalue().to_pybytes()
    return "", payload


def _die_with_parent() -> None:
    """Worker initializer: a parser process must not outlive a run that was killed (it would hold pipes
    and memory). A watchdog thread exits as soon as the worker is re-parented."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


class ParserPool:
    """Parser worker processes for one load, started on first use and always shut down with it.

    Parsing is CPU work the GIL would serialise, so it runs in forked processes (spawn/forkserver would
    re-import the caller's main module, which scripts and ``python -c`` cannot all tolerate); workers only
    run parser code, never chDB, and die with their parent. One core, or not Linux: the calling thread
    parses. The pool must not outlive the load: a Dagster run is a multiprocessing child, which joins its
    children before the executor's own exit hook would stop them, so an idle pool kept the run (and two
    parser processes) alive for good.
    """

    def __init__(self, enabled: bool = True) -> None:
        self._enabled = enabled and (os.cpu_count() or 1) >= 2 and sys.platform.startswith("linux")
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def run(self, fn: Callable, *args):
        """``fn(*args)`` in a worker, or in this thread. A worker that dies (killed, out of memory) breaks
        its pool: a new one takes the call once more, then BrokenProcessPool is the caller's."""
        if not self._enabled:
            return fn(*args)
        try:
            return self._submit(fn, *args)
        except BrokenProcessPool:
            return self._submit(fn, *args)

    def _submit(self, fn: Callable, *args):
        executor = self._current()
        try:
            return executor.submit(fn, *args).result()
        except BrokenProcessPool:
            self._discard(executor)
            raise

    def _current(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    max_workers=os.cpu_count() or 1,
                    mp_context=multiprocessing.get_context("fork"),
                    initializer=_die_with_parent,
                )
            return self._executor

    def _discard(self, broken: ProcessPoolExecutor) -> None:
        """Drop ``broken`` (threads that saw the same pool break replace it once, not once each)."""
        with self._lock:
            if self._executor is broken:
                self._executor = None
        broken.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


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
        size += item.weight
        if size >= group_bytes:
            yield group
            group, size = [], 0
    if group:
        yield group


def _group_tables(group: list[_Fetched]) -> dict[str, pa.Table]:
    empty = {
        "observations_staging": OBSERVATION_SCHEMA,
        "traces_staging": TRACE_SCHEMA,
        "scores_staging": SCORE_SCHEMA,
    }
    return {
        name: pa.concat_tables([f.tables[name] for f in group if f.tables] or [schema.empty_table()])
        for name, schema in empty.items()
    }


def _insert_tables(ch: ClickHouse, db: str, load_id: str, parsed: list[_Fetched]) -> None:
    """The staging rows of objects parsed in Python, one insert per staging table."""
    if not parsed:
        return
    for table, data in _group_tables(parsed).items():
        ch.insert_arrow(f"{db}.{table}", _with_load_id(data, load_id))


def _map_in_clickhouse(
    ch: ClickHouse,
    db: str,
    load_id: str,
    mapping: list[_Fetched],
    settings: Settings,
    parsers: ParserPool,
    report: LoadReport,
) -> list[_Fetched]:
    """Let ClickHouse map the OTLP/JSON objects; parse in Python those it does not take (returned, to be
    inserted). Outcomes are updated in place."""
    try:
        taken = otlp_json.load(ch, db, load_id, settings.max_record_bytes, [f.mapping for f in mapping])
    except Exception as exc:  # a mapping bug must not stop ingestion: Python maps every object instead
        report.notes.append(f"ClickHouse did not map {len(mapping)} OTLP/JSON objects ({exc}); Python did")
        taken = {}
    parsed = []
    for item in mapping:
        if item.outcome.key in taken:
            item.outcome.status, item.outcome.observations = "loaded", taken[item.outcome.key]
        else:
            raw = parse_key(item.outcome.key, settings.raw_prefix)
            done = _parsed(item.outcome, _parse(parsers, raw, item.data, _limits(settings)))
            item.tables = done.tables
            if item.tables:
                parsed.append(item)
        item.mapping, item.data = None, b""
    return parsed


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

    parsers = ParserPool(enabled=len(todo) > 1)
    with ThreadPoolExecutor(max_workers=fetch_threads) as pool, closing(parsers):
        fetched = _bounded_map(
            pool,
            lambda k: _fetch_and_parse(s3, settings.raw_bucket, k, settings, parsers),
            todo,
            in_flight=fetch_threads * 2,
        )
        for group in _groups(fetched, group_bytes):
            load_id = uuid.uuid4().hex
            committing = [f.outcome for f in group if f.outcome.status in ("loaded", "mapping")]
            if committing:
                ch.insert_arrow(f"{db}.ingest_ledger", _ledger_table(committing, "started", run_id, load_id))
                _insert_tables(ch, db, load_id, [f for f in group if f.tables])
            mapping = [f for f in group if f.mapping is not None]
            if mapping:
                parsed = _map_in_clickhouse(ch, db, load_id, mapping, settings, parsers, report)
                _insert_tables(ch, db, load_id, parsed)
            ch.insert_arrow(
                f"{db}.ingest_ledger", _ledger_table([f.outcome for f in group], None, run_id, load_id)
            )
            for item in group:
                report.outcomes.append(item.outcome)
                if on_object:
                    on_object(item.outcome)
    return report
