"""Load raw S3 objects into the staging tables, exactly once, quarantining what cannot be read.

Protocol per group of objects (one group is at most ``group_bytes`` of raw data):

1. objects whose latest ledger state is ``loaded`` or ``quarantined`` are skipped (re-runs load nothing
   twice), unless the caller listed them with an ETag other than the one loaded: an object overwritten
   after its load is loaded again as a new version (reported, never silent); objects left ``started`` by a
   crashed attempt, and overwritten ones, have their earlier staging rows deleted first;
2. the group is fetched (S3 GETs in parallel threads, at most ``max_bytes_in_flight`` fetched bytes held
   before the loading thread takes them) and parsed into Arrow (in a pool of worker processes, one per
   core: parsing is CPU work the GIL would serialise); a bad object becomes a quarantine outcome with its
   reason, the others go on. A value inside an object that no column can take stays in the row's
   metadata and is counted on the object's ledger row (``unmapped``, ``note``): it never costs the object;
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
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from botocore.exceptions import ClientError

from orchestration.clickhouse import ClickHouse, query_rows
from orchestration.parsers import BadObject, parse_object
from orchestration.parsers.common import OBSERVATION_SCHEMA, SCORE_SCHEMA, TRACE_SCHEMA, to_arrow
from orchestration.raw_keys import BadKey, RawKey, parse_key, skip_reason
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
    unmapped: int = 0  # values no column could take, kept in their rows' metadata
    note: str = ""  # the first of those problems, for the ledger and the run log
    project_id: str = ""
    format: str = ""
    # S3 LastModified of the version read: orders versions whose event times tie (later upload wins)
    uploaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class LoadReport:
    outcomes: list[Outcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what an operator should know (a fast path that failed)

    def add(self, other: LoadReport) -> None:
        """Fold in the report of another load of the same run."""
        self.outcomes += other.outcomes
        self.notes += other.notes

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def skipped_by_reason(self) -> dict[str, int]:
        """Objects not loaded this run, per reason (already loaded, or not trace data)."""
        reasons: dict[str, int] = {}
        for o in self.outcomes:
            if o.status == "skipped":
                reason = "already loaded or quarantined" if o.reason.startswith("already") else o.reason
                reasons[reason] = reasons.get(reason, 0) + 1
        return reasons

    def rows(self, table: str) -> int:
        return sum(getattr(o, table) for o in self.outcomes if o.status == "loaded")

    @property
    def bytes_loaded(self) -> int:
        return sum(o.size for o in self.outcomes if o.status == "loaded")

    @property
    def quarantined(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "quarantined"]

    @property
    def with_unmapped(self) -> list[Outcome]:
        """Loaded objects that kept some values in metadata because no column could take them."""
        return [o for o in self.outcomes if o.status == "loaded" and o.unmapped]

    def summary(self, limit: int = 200) -> dict[str, Any]:
        """What the run loaded, as plain data (run metadata in the UI; the command line prints it); object
        lists stop at ``limit`` (the ledger has every object)."""
        return {
            "loaded": self.count("loaded"),
            "quarantined": self.count("quarantined"),
            "skipped": self.count("skipped"),
            "rows": {table: self.rows(table) for table in ("observations", "traces", "scores")},
            "bytes_loaded": self.bytes_loaded,
            "skipped_by_reason": self.skipped_by_reason(),
            "quarantined_objects": [[o.key, o.reason] for o in self.quarantined[:limit]],
            "loaded_with_unmapped": [[o.key, o.note] for o in self.with_unmapped[:limit]],
            "notes": self.notes[:limit],
        }


@dataclass
class _Fetched:
    outcome: Outcome
    tables: dict[str, pa.Table] = field(default_factory=dict)  # staging table -> rows of this object
    raw: RawKey | None = None
    data: bytes = b""  # the object as fetched, for the Python parser
    budgeted: int = 0  # bytes of the fetch budget this object holds until the loading thread takes it

    @property
    def weight(self) -> int:
        """Bytes this object holds in memory while its group loads."""
        return len(self.data)


class ByteBudget:
    """At most ``limit`` bytes fetched and not yet taken by the loading thread, across all fetch threads.

    Grants go in ticket order (the order the loading thread consumes results in), so a later object can
    never hold the bytes an earlier one waits for while the loading thread waits for that earlier one; an
    object larger than the whole budget is granted when nothing else is held.
    """

    def __init__(self, limit: int) -> None:
        self._limit, self._held = limit, 0
        self._next_ticket = self._serving = 0
        self._closed = False
        self._cond = threading.Condition()

    def ticket(self) -> int:
        with self._cond:
            self._next_ticket += 1
            return self._next_ticket - 1

    def acquire(self, ticket: int, size: int) -> None:
        """Wait for ``ticket``'s turn and room for ``size`` bytes (0 to pass the turn on)."""
        with self._cond:
            self._cond.wait_for(
                lambda: (
                    self._closed
                    or (self._serving == ticket and (self._held + size <= self._limit or self._held == 0))
                )
            )
            self._held += size
            self._serving += 1
            self._cond.notify_all()

    def release(self, size: int) -> None:
        with self._cond:
            self._held -= size
            self._cond.notify_all()

    def close(self) -> None:
        """The load is over (or failed): let every waiting fetch through, so none blocks shutdown."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @contextmanager
    def turn(self, ticket: int) -> Iterator[Callable[[int], None]]:
        """``ticket``'s turn as a block: the block calls the yielded function with the bytes it is about to
        hold; a block that never does passes the turn on, and one that fails gives its bytes back."""
        taken: list[int] = []

        def take(size: int) -> None:
            self.acquire(ticket, size)
            taken.append(size)

        try:
            yield take
        except BaseException:
            self.release(sum(taken))
            raise
        finally:
            if not taken:
                self.acquire(ticket, 0)


@dataclass(frozen=True)
class LedgerState:
    status: str  # started | loaded | quarantined
    etag: str  # of the version that state is about

    @property
    def committed(self) -> bool:
        return self.status in ("loaded", "quarantined")


def ledger_states(ch: ClickHouse, keys: list[str], db: str = DATABASE) -> dict[str, LedgerState]:
    """The latest ledger state of each key that has one."""
    if not keys:
        return {}
    rows = query_rows(
        ch,
        "SELECT source_key, toString(argMax(status, recorded_at)) AS status, "  # noqa: S608
        f"argMax(etag, recorded_at) AS etag FROM {db}.ingest_ledger "
        "WHERE source_key IN {keys:Array(String)} GROUP BY source_key",
        {"keys": keys},
    )
    return {r["source_key"]: LedgerState(r["status"], r["etag"]) for r in rows}


def overwritten(state: LedgerState | None, listed_etag: str | None) -> bool:
    """A committed object whose listing shows another ETag than the version that was committed."""
    return bool(state and state.committed and state.etag and listed_etag and listed_etag != state.etag)


def _fetch(s3, key: str, settings: Settings, budget: ByteBudget, ticket: int) -> _Fetched:
    """GET one object (in a fetch thread) within the byte budget. Decoding and parsing happen later, driven
    from the loading thread, which releases the object's share of the budget when it takes it."""
    outcome = Outcome(key=key, status="quarantined")
    with budget.turn(ticket) as take:
        try:
            raw = parse_key(key, settings.raw_prefix)
        except BadKey as exc:
            outcome.reason = str(exc)
            return _Fetched(outcome)
        outcome.project_id, outcome.format = raw.project_id, raw.format
        try:
            response = s3.get_object(Bucket=settings.raw_bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                outcome.reason = "object was listed but no longer exists in the bucket"
                return _Fetched(outcome)
            raise
        body = response["Body"]
        outcome.size = int(response.get("ContentLength") or 0)
        outcome.etag = response.get("ETag", "").strip('"')
        if isinstance(response.get("LastModified"), datetime):
            outcome.uploaded_at = response["LastModified"].astimezone(UTC)
        try:
            if outcome.size > settings.max_object_bytes:
                outcome.reason = (
                    f"object is {outcome.size} bytes, over the {settings.max_object_bytes}-byte limit"
                )
                return _Fetched(outcome)
            take(outcome.size)
            data = body.read(settings.max_object_bytes + 1)
        finally:
            body.close()
        outcome.status = "parsing"
        return _Fetched(outcome, raw=raw, data=data, budgeted=outcome.size)


_DIED_TWICE = "the parser process died on this object twice (out of memory or a crash)"


def _parse_all(parsers: ParserPool, items: list[_Fetched], settings: Settings) -> None:
    """Parse ``items`` in Python (in parallel workers), filling their tables and outcomes in place."""
    limits = (settings.max_object_bytes, settings.max_record_bytes)
    results = parsers.map(parse_to_arrow, [(item.raw, item.data, limits) for item in items])
    for item, result in zip(items, results, strict=True):
        reason, payload, unmapped = result or (_DIED_TWICE, {}, [])
        item.data = b""
        if reason:
            item.outcome.status, item.outcome.reason = "quarantined", reason
            continue
        item.tables = {name: pa.ipc.open_stream(blob).read_all() for name, blob in payload.items()}
        item.outcome.status = "loaded"
        item.outcome.unmapped = len(unmapped)
        item.outcome.note = _unmapped_note(unmapped)
        item.outcome.observations, item.outcome.traces, item.outcome.scores = (
            item.tables["observations_staging"].num_rows,
            item.tables["traces_staging"].num_rows,
            item.tables["scores_staging"].num_rows,
        )


def _unmapped_note(problems: list[str]) -> str:
    if not problems:
        return ""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{len(problems)} value(s) kept in metadata, not mapped: {problems[0]}{more}"[:1000]


def parse_to_arrow(
    raw: RawKey, data: bytes, limits: tuple[int, int]
) -> tuple[str, dict[str, bytes], list[str]]:
    """Parse one object into Arrow IPC streams per staging table, or give the reason it is bad; with the
    values it kept in metadata because no column could take them.

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
        return str(exc), {}, []
    except Exception as exc:  # a parser bug must not lose the object or stop the batch
        return f"unexpected {type(exc).__name__} while parsing: {exc}"[:2000], {}, []
    payload = {}
    for name, table in tables.items():
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        payload[name] = sink.getvalue().to_pybytes()
    return "", payload, parsed.unmapped


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

    Parsing is CPU work the GIL would serialise, so it runs in forked worker processes (spawn/forkserver
    would re-import the caller's main module, which scripts cannot all tolerate). Workers only run parser
    code, never chDB, and die with their parent. Forks happen in the loading thread only (fetch threads
    only GET): a pool replaced from a fetch thread once forked while another thread held a lock, and the
    worker hung. One core, or not Linux: the calling thread parses. The pool must not outlive the load: a
    Dagster run is a multiprocessing child, which joins its children before the executor's own exit hook
    would stop them, so an idle pool kept the run (and two parser processes) alive for good.
    """

    def __init__(self, enabled: bool = True) -> None:
        self._enabled = enabled and (os.cpu_count() or 1) >= 2 and sys.platform.startswith("linux")
        self._executor: ProcessPoolExecutor | None = None

    def map(self, fn: Callable, calls: list[tuple]) -> list:
        """``fn(*args)`` for every ``args`` of ``calls``, in parallel workers or in this thread. A worker that
        dies (killed, out of memory) breaks its pool: the calls it took down run once more in a new pool,
        one by one; those that break that one too give None."""
        if not self._enabled:
            return [fn(*args) for args in calls]
        executor = self._current()
        futures = [executor.submit(fn, *args) for args in calls]
        results = []
        for args, future in zip(calls, futures, strict=True):
            try:
                results.append(future.result())
            except BrokenProcessPool:
                self._discard(executor)
                results.append(self._retry(fn, args))
        return results

    def _retry(self, fn: Callable, args: tuple):
        executor = self._current()
        try:
            return executor.submit(fn, *args).result()
        except BrokenProcessPool:
            self._discard(executor)
            return None

    def _current(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=os.cpu_count() or 1,
                mp_context=multiprocessing.get_context("fork"),
                initializer=_die_with_parent,
            )
        return self._executor

    def _discard(self, broken: ProcessPoolExecutor) -> None:
        if self._executor is broken:  # its other calls see the same breakage: replace it once
            self._executor = None
        broken.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
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
            "unmapped": o.unmapped if status is None else 0,
            "note": o.note if status is None else "",
            "run_id": run_id,
            "load_id": load_id,
            "uploaded_at": o.uploaded_at,
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
    etags: Mapping[str, str] | None = None,
) -> LoadReport:
    """Load ``keys`` from the raw bucket into staging; see the module docstring for the protocol.

    ``etags`` (key -> ETag, from a listing) lets a committed key whose object was overwritten load again.
    """
    report = LoadReport()
    keys = list(dict.fromkeys(keys))
    states = ledger_states(ch, keys, db)
    etags = etags or {}
    todo = []
    for key in keys:
        state = states.get(key)
        not_data = skip_reason(key, settings.raw_prefix)
        if not_data:
            report.outcomes.append(Outcome(key=key, status="skipped", reason=not_data))
        elif overwritten(state, etags.get(key)):
            report.notes.append(
                f"{key} was overwritten after it was {state.status} (ETag {state.etag} -> {etags[key]}): "
                "loaded again as a new version"
            )
            todo.append(key)
        elif state and state.committed:
            report.outcomes.append(Outcome(key=key, status="skipped", reason=f"already {state.status}"))
        else:
            todo.append(key)
    stale = [k for k in todo if k in states]  # a crashed attempt's rows, or an overwritten version's
    if stale:
        for table in STAGING_TABLES:
            ch.command(
                f"DELETE FROM {db}.{table} WHERE source_key IN {{keys:Array(String)}}",  # noqa: S608
                {"keys": stale},
            )

    parsers = ParserPool(enabled=len(todo) > 1)
    budget = ByteBudget(settings.max_bytes_in_flight)
    pool = ThreadPoolExecutor(max_workers=fetch_threads)

    def taken() -> Iterator[_Fetched]:
        tickets = ((key, budget.ticket()) for key in todo)  # drawn in submission order
        fetch = lambda kt: _fetch(s3, kt[0], settings, budget, kt[1])  # noqa: E731
        for item in _bounded_map(pool, fetch, tickets, in_flight=fetch_threads * 2):
            budget.release(item.budgeted)
            yield item

    with closing(parsers):
        try:
            for group in _groups(taken(), group_bytes):
                _load_group(ch, db, run_id, group, settings, parsers, report, on_object)
        finally:
            budget.close()
            pool.shutdown(wait=True, cancel_futures=True)
    return report


def _load_group(
    ch: ClickHouse,
    db: str,
    run_id: str,
    group: list[_Fetched],
    settings: Settings,
    parsers: ParserPool,
    report: LoadReport,
    on_object: Callable[[Outcome], None] | None,
) -> None:
    """Steps 2-3 of the protocol for one group: parse, ledger ``started``, staging rows, ledger outcome."""
    load_id = uuid.uuid4().hex
    _parse_all(parsers, [f for f in group if f.outcome.status == "parsing"], settings)
    committing = [f.outcome for f in group if f.outcome.status == "loaded"]
    if committing:
        ch.insert_arrow(f"{db}.ingest_ledger", _ledger_table(committing, "started", run_id, load_id))
        _insert_tables(ch, db, load_id, [f for f in group if f.tables])
    ch.insert_arrow(f"{db}.ingest_ledger", _ledger_table([f.outcome for f in group], None, run_id, load_id))
    for item in group:
        report.outcomes.append(item.outcome)
        if on_object:
            on_object(item.outcome)
