"""ClickHouse's HTTP interface in front of chDB: the server-mode test fixture (a protocol adapter).

clickhouse-connect talks to it exactly as to a ClickHouse server: queries in the URL or the body, ``param_*``
bound as ClickHouse query parameters, settings and ``database`` per request, ``session_id`` (one chDB
session per id, so temporary tables and ``SET`` stay in their session), ``INSERT ... FORMAT <fmt>`` bodies
(chunked, lz4/zstd/gzip/deflate-compressed), errors as ClickHouse sends them (HTTP status,
``X-ClickHouse-Exception-Code``, ``Code: N. DB::Exception: ...``) and ``/ping``. Every statement is
ClickHouse's own SQL run by chDB.

``--record FILE`` appends every statement received (one JSON line each), so tests can read what the code sent.
``--cluster NAME`` stands in for a cluster's SQL surface so cluster-mode code can run here: after recording,
``ON CLUSTER NAME`` is removed, ``Replicated*MergeTree(path, replica)`` becomes the plain engine and
``Distributed(NAME, db, table[, key])`` a ``Merge`` over that table. That proves what the code sends, not
how a cluster runs it (docs/operations.md says what was run on a real cluster).

Run as ``python -m tests.clickhouse_http --path DIR``; it prints its port on the first line of stdout.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb

# URL parameters that steer the HTTP exchange; every other non-param_ key is a ClickHouse setting.
_TRANSPORT = {
    "query",
    "database",
    "session_id",
    "session_timeout",
    "session_check",
    "query_id",
    "default_format",
    "user",
    "password",
    "quota_key",
    "compress",
    "decompress",
    "enable_http_compression",
    "wait_end_of_query",
    "send_progress_in_http_headers",
    "http_headers_progress_interval_ms",
    "cancel_http_readonly_queries_on_client_close",
    "client_protocol_version",
    "buffer_size",
}
_FORMAT_RE = re.compile(r"\s+FORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)
_INSERT_RE = re.compile(r"^\s*INSERT\s+INTO\b", re.IGNORECASE)
_CODE_RE = re.compile(r"Code: (\d+)\.")
# ClickHouse's own mapping of some error codes to HTTP statuses (the rest are 500).
_HTTP_STATUS = {60: 404, 81: 404, 62: 400, 47: 400, 46: 400, 36: 400, 456: 400, 115: 400}


def _decompress(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if not encoding or encoding == "identity":
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "lz4":
        import lz4.frame

        return lz4.frame.decompress(body)
    if encoding == "zstd":
        from backports import zstd  # clickhouse-connect's own zstd dependency

        return zstd.decompress(body)
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


class _Sessions:
    """One chDB connection per HTTP session id (plus one for requests without); one statement at a time.

    chDB runs one engine per process; its connections share the tables and keep their own session state.
    As in ClickHouse, a session takes one request at a time: a second concurrent request with the same
    session id fails with SESSION_IS_LOCKED (code 373).
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._connections: dict[str, Any] = {}
        self._busy: set[str] = set()
        self._mutex = threading.Lock()
        self.engine = threading.Lock()

    @contextmanager
    def session(self, session_id: str) -> Iterator[Any]:
        with self._mutex:
            if session_id and session_id in self._busy:
                raise RuntimeError(
                    f"Code: 373. DB::Exception: Session {session_id} is locked by a concurrent client. "
                    "(SESSION_IS_LOCKED)"
                )
            self._busy.add(session_id)
        try:
            with self.engine:
                conn = self._connections.get(session_id)
                if conn is None:
                    conn = self._connections[session_id] = chdb.connect(self._path)
                yield conn
        finally:
            with self._mutex:
                self._busy.discard(session_id)


class _Cluster:
    """Turns cluster-mode SQL into what one chDB node can run (after it was recorded)."""

    def __init__(self, name: str) -> None:
        quoted = re.escape(name)
        self._on_cluster = re.compile(rf"\s+ON\s+CLUSTER\s+`?{quoted}`?", re.IGNORECASE)
        self._replicated = re.compile(
            r"Replicated(\w*MergeTree)\(\s*'[^']*'\s*,\s*'[^']*'\s*(,\s*)?", re.IGNORECASE
        )
        self._distributed = re.compile(
            rf"Distributed\(\s*'?{quoted}'?\s*,\s*'?(\w+)'?\s*,\s*'?(\w+)'?\s*(?:,.*)?\)\s*$",
            re.IGNORECASE | re.MULTILINE,
        )

    def local(self, sql: str) -> str:
        sql = self._on_cluster.sub("", sql)
        sql = self._replicated.sub(lambda m: f"{m.group(1)}(", sql)
        return self._distributed.sub(lambda m: f"Merge({m.group(1)}, '^{m.group(2)}$')", sql)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    sessions: _Sessions
    record: Path | None = None
    cluster: _Cluster | None = None
    record_lock = threading.Lock()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (BaseHTTPRequestHandler's name)
        return

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._handle(b"")

    def do_POST(self) -> None:  # noqa: N802
        self._handle(self._read_body())

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            body = b"".join(chunks)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return _decompress(body, self.headers.get("Content-Encoding", ""))

    def _handle(self, body: bytes) -> None:
        url = urlsplit(self.path)
        if url.path in ("/ping", "/replicas_status"):
            self._reply(200, b"Ok.\n", {})
            return
        args = dict(parse_qsl(url.query, keep_blank_values=True))
        query = args.get("query", "")
        is_insert = bool(query) and bool(_INSERT_RE.match(query)) and bool(body)
        if not is_insert:
            query = f"{query}\n{body.decode()}" if query and body else (query or body.decode())
        params = {k[len("param_") :]: v for k, v in args.items() if k.startswith("param_")}
        settings = {k: v for k, v in args.items() if k not in _TRANSPORT and not k.startswith("param_")}
        try:
            self._record(query)
            if self.cluster:
                query = self.cluster.local(query)
            with self.sessions.session(args.get("session_id", "")) as conn:
                self._prepare(conn, args.get("database"), settings)
                if is_insert:
                    data, fmt = b"", "TabSeparated"
                    self._insert(conn, query, body)
                else:
                    data, fmt = self._query(conn, query, params, args.get("default_format", "TabSeparated"))
        except Exception as exc:  # noqa: BLE001 (every engine error goes back to the client, as ClickHouse does)
            message = str(exc).strip() or type(exc).__name__
            match = _CODE_RE.search(message)
            code = int(match.group(1)) if match else 1001
            if not match:
                message = f"Code: {code}. DB::Exception: {message}. (STD_EXCEPTION)"
            self._reply(
                _HTTP_STATUS.get(code, 500),
                f"{message} (version chDB)\n".encode(),
                {"X-ClickHouse-Exception-Code": str(code)},
            )
            return
        self._reply(
            200,
            data,
            {"X-ClickHouse-Format": fmt, "X-ClickHouse-Timezone": "UTC", "X-ClickHouse-Summary": "{}"},
        )

    def _record(self, query: str) -> None:
        if self.record is None:
            return
        with self.record_lock, self.record.open("a") as out:
            out.write(json.dumps({"sql": query}) + "\n")

    @staticmethod
    def _prepare(conn: Any, database: str | None, settings: dict[str, str]) -> None:
        """Settings and the database of a request apply to its session, as in ClickHouse's HTTP handler."""
        if database:
            conn.query(f"USE `{database.replace('`', '')}`", "Null")
        for name, value in settings.items():
            if not re.fullmatch(r"[A-Za-z0-9_]+", name):
                raise ValueError(f"Code: 115. DB::Exception: Unknown setting {name!r}. (UNKNOWN_SETTING)")
            conn.query(f"SET {name} = {{v:String}}", "Null", params={"v": value})

    @staticmethod
    def _insert(conn: Any, query: str, body: bytes) -> None:
        match = _FORMAT_RE.search(query)
        fmt = match.group(1) if match else "TabSeparated"
        statement = query[: match.start()] if match else query
        with conn.send_insert(statement, fmt) as inserter:
            inserter.append(body)
            inserter.finish()

    @staticmethod
    def _query(conn: Any, query: str, params: dict[str, str], default_format: str) -> tuple[bytes, str]:
        match = _FORMAT_RE.search(query)
        fmt = match.group(1) if match else default_format
        statement = query[: match.start()] if match else query
        result = conn.query(statement, fmt, params=params or None)
        data = result.bytes() if hasattr(result, "bytes") else (result or b"")
        return (data if isinstance(data, bytes) else str(data).encode()), fmt

    def _reply(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


@dataclass
class ClickHouseHTTP:
    """A running adapter process; ``url`` is what ``CLICKHOUSE_URL`` takes."""

    process: subprocess.Popen
    url: str

    @classmethod
    def start(cls, path: Path, record: Path | None = None, cluster: str | None = None) -> ClickHouseHTTP:
        command = [sys.executable, "-m", "tests.clickhouse_http", "--path", str(path)]
        command += ["--record", str(record)] if record else []
        command += ["--cluster", cluster] if cluster else []
        repo = Path(__file__).resolve().parent.parent
        process = subprocess.Popen(command, cwd=repo, stdout=subprocess.PIPE, env=os.environ.copy())
        port = process.stdout.readline().strip() if process.stdout else b""
        if not port:
            process.kill()
            raise RuntimeError("the ClickHouse HTTP adapter did not start")
        return cls(process, f"http://default:@127.0.0.1:{int(port)}/default")

    @classmethod
    @contextmanager
    def serving(cls, path: Path, record: Path | None = None, cluster: str | None = None) -> Iterator[str]:
        """The adapter for the duration of a block; yields its URL."""
        server = cls.start(path, record, cluster)
        try:
            yield server.url
        finally:
            server.stop()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", required=True, help="chDB data folder")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", type=Path, help="append every statement received to this JSON-lines file")
    parser.add_argument(
        "--cluster", help="accept cluster-mode SQL for this cluster name (see the module doc)"
    )
    args = parser.parse_args(argv)
    _Handler.sessions = _Sessions(args.path)
    _Handler.record = args.record
    _Handler.cluster = _Cluster(args.cluster) if args.cluster else None
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
