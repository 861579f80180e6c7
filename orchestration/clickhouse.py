"""One small ClickHouse interface, two backends: embedded chDB and clickhouse-connect.

Both speak the same SQL and bind values server-side with ClickHouse query parameters (``{name:Type}``), so
no value from data is ever concatenated into SQL text.

chDB allows one process per data folder. The embedded backend therefore takes an exclusive ``flock`` on
``<folder>.lock`` before opening the folder, waits a bounded time for another run to finish, and raises
:class:`EmbeddedClickHouseBusy` naming the holder if it does not. Within one process the connection is
shared and reference counted, so an asset and its checks in the same run reuse it.
"""

from __future__ import annotations

import fcntl
import io
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from orchestration.settings import ConfigError


class EmbeddedClickHouseBusy(RuntimeError):
    """Another process holds the embedded ClickHouse data folder."""


class ClickHouse(Protocol):
    cluster: str | None  # CLICKHOUSE_CLUSTER: schema statements go ON CLUSTER with Replicated engines

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None: ...

    def query_arrow(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table: ...

    def insert_arrow(self, table: str, data: pa.Table) -> int: ...


def query_rows(ch: ClickHouse, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Small result sets as a list of dicts."""
    return ch.query_arrow(sql, params).to_pylist()


def query_scalar(ch: ClickHouse, sql: str, params: Mapping[str, Any] | None = None) -> Any:
    table = ch.query_arrow(sql, params)
    return table.column(0)[0].as_py() if table.num_rows else None


def _quote(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, date):  # dates and datetimes are quoted inside arrays, tuples and maps
        value = format_param(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return format_param(value)


def format_param(value: Any) -> str:
    """A Python value in ClickHouse's text format for query parameters (what HTTP ``param_*`` carries).

    Both backends send this text: chDB takes parameter strings as they are, and clickhouse-connect is
    handed it ready-made (``_Formatted``).
    """
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, tuple):
        return "(" + ",".join(_quote(v) for v in value) + ")"
    if isinstance(value, list | set | frozenset):
        return "[" + ",".join(_quote(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_quote(k)}:{_quote(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"unsupported query parameter type {type(value).__name__}")


def on_cluster(ch: ClickHouse) -> str:
    """The ``ON CLUSTER`` clause of a DDL statement on ``ch``, empty outside cluster mode
    (docs/operations.md)."""
    return f" ON CLUSTER {ch.cluster}" if ch.cluster else ""


def replicated(engine: str) -> str:
    """``engine`` (``MergeTree``, ``AggregatingMergeTree``, ...) as its Replicated form on a cluster.

    The Keeper path is the table's UUID (ClickHouse's own default path), not its database and name: a
    blue/green swap exchanges names and the data keeps its path, so the next shadow table, created under the
    name the live one had, never asks for a path still in use (with name paths it did). Needs the Atomic
    database engine and ``ON CLUSTER``, which sends every replica the same UUID.
    """
    return f"Replicated{engine}('/clickhouse/tables/{{uuid}}/{{shard}}', '{{replica}}')"


def _chdb_params(params: Mapping[str, Any] | None) -> dict[str, str] | None:
    return {k: format_param(v) for k, v in params.items()} if params else None


class ChdbClickHouse:
    """Embedded ClickHouse (chDB) with its data under a local folder."""

    cluster = None  # one process, one node

    def __init__(self, conn: Any):
        self._conn = conn
        self._lock = threading.RLock()

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        with self._lock:
            self._conn.query(sql, "Null", params=_chdb_params(params))

    def query_arrow(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        with self._lock:
            result = self._conn.query(sql, "ArrowStream", params=_chdb_params(params))
        data = result.bytes() if hasattr(result, "bytes") else result
        if not data:
            return pa.table({})
        return pa.ipc.open_stream(io.BytesIO(data)).read_all()

    def insert_arrow(self, table: str, data: pa.Table) -> int:
        if data.num_rows == 0:
            return 0
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, data.schema) as writer:
            writer.write_table(data)
        columns = ", ".join(f"`{name}`" for name in data.column_names)
        with (
            self._lock,
            self._conn.send_insert(f"INSERT INTO {table} ({columns})", "ArrowStream") as inserter,
        ):
            inserter.append(sink.getvalue())
            inserter.finish()
        return data.num_rows


class _Formatted:
    """A parameter already in ClickHouse's text format: clickhouse-connect sends it as ``str()`` gives it."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


def _connect_params(params: Mapping[str, Any] | None) -> dict[str, _Formatted] | None:
    """The same parameter text as the embedded backend. clickhouse-connect's own formatting would send
    dicts as JSON (which a ``Map`` parameter cannot parse) and datetimes without their microseconds."""
    return {k: _Formatted(format_param(v)) for k, v in params.items()} if params else None


class ConnectClickHouse:
    """A real ClickHouse server through clickhouse-connect (HTTP), same SQL as chDB."""

    def __init__(self, client: Any, cluster: str | None = None):
        self._client = client
        self.cluster = cluster

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._client.command(sql, parameters=_connect_params(params))

    def query_arrow(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        return self._client.query_arrow(sql, parameters=_connect_params(params))

    def insert_arrow(self, table: str, data: pa.Table) -> int:
        if data.num_rows == 0:
            return 0
        self._client.insert_arrow(table, data)
        return data.num_rows

    def close(self) -> None:
        self._client.close()


class _EmbeddedRegistry:
    """Process-wide: at most one open chDB folder, shared by reference count."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._path: Path | None = None
        self._conn: Any = None
        self._client: ChdbClickHouse | None = None
        self._lock_fd: int | None = None
        self._refs = 0

    def acquire(self, path: Path, wait_seconds: float) -> ChdbClickHouse:
        with self._mutex:
            if self._client is not None:
                if self._path != path:
                    raise EmbeddedClickHouseBusy(
                        f"this process already has embedded ClickHouse open at {self._path}; "
                        f"close it before opening {path}"
                    )
                self._refs += 1
                return self._client
            path.mkdir(parents=True, exist_ok=True)
            self._lock_fd = _lock_folder(path, wait_seconds)
            try:
                _check_status_file(path)
                import chdb

                self._conn = chdb.connect(str(path))
            except Exception:
                _unlock_folder(self._lock_fd)
                self._lock_fd = None
                raise
            self._path, self._client, self._refs = path, ChdbClickHouse(self._conn), 1
            return self._client

    def release(self) -> None:
        with self._mutex:
            self._refs -= 1
            if self._refs > 0:
                return
            try:
                self._conn.close()
            finally:
                _unlock_folder(self._lock_fd)
                self._path = self._conn = self._client = self._lock_fd = None
                self._refs = 0


def _lock_folder(path: Path, wait_seconds: float) -> int:
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise EmbeddedClickHouseBusy(
                    f"embedded ClickHouse folder {path} is in use by process {holder} and stayed busy for "
                    f"{wait_seconds:.0f}s. Embedded chDB allows one process per folder: let the other run "
                    "finish, or point CLICKHOUSE_URL at a ClickHouse server for concurrent runs."
                ) from None
            time.sleep(0.2)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _check_status_file(path: Path) -> None:
    """Fail with a clear message when another process (one that does not take tracehouse's lock file: a
    chDB script, a clickhouse-local) has the folder open. ClickHouse locks ``<folder>/status`` while it
    runs; chDB would fail on it with a generic connection error and only log the real reason."""
    status = path / "status"
    if not status.exists():
        return
    fd = os.open(status, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except BlockingIOError:
        text = os.pread(fd, 256, 0).decode(errors="replace")
        pids = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("PID:")]
        holder = f" (pid {pids[0]})" if pids else ""
        raise EmbeddedClickHouseBusy(
            f"embedded ClickHouse folder {path} is held by another process{holder} "
            "that does not use tracehouse's lock file (a chDB script or clickhouse-local?); stop it, or set "
            "CLICKHOUSE_URL to use a server"
        ) from None
    finally:
        os.close(fd)


def _unlock_folder(fd: int | None) -> None:
    if fd is None:
        return
    try:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


_EMBEDDED = _EmbeddedRegistry()


@contextmanager
def open_clickhouse(
    url: str | None, chdb_path: Path, wait_seconds: float = 120.0, cluster: str | None = None
) -> Iterator[ClickHouse]:
    """Open the configured backend for the duration of a block (a run, a CLI command, a test); ``cluster``
    (CLICKHOUSE_CLUSTER) makes the schema statements sent through it cluster-wide."""
    if cluster and not url:
        raise ConfigError(
            "CLICKHOUSE_CLUSTER needs a server: set CLICKHOUSE_URL too (embedded chDB is one node)"
        )
    if url:
        import clickhouse_connect

        # No session id: one client is shared by threads (an asset and its checks, the loader's workers), and
        # a server refuses concurrent requests in one session (SESSION_IS_LOCKED). Nothing here needs one.
        client = ConnectClickHouse(
            clickhouse_connect.get_client(dsn=url, autogenerate_session_id=False), cluster or None
        )
        try:
            yield client
        finally:
            client.close()
        return
    client = _EMBEDDED.acquire(chdb_path.resolve(), wait_seconds)
    try:
        yield client
    finally:
        _EMBEDDED.release()
