"""OTLP/JSON objects mapped inside ClickHouse: the loader's fast path for the Collector's default marshaler.

The decoded objects of a group go into a session-scoped Memory table (one block per core, so the mapping
runs on every core). Two statements of ``sql/otlp_json.sql`` then parse them into one row per span with its
attributes as arrays (another Memory table), and map those rows into ``observations_staging``; as one
statement, ClickHouse took longer to plan the query than to run it. An object the SQL cannot map exactly as
``parsers/otlp.py`` would, or that Python would reject, gives no row: :func:`load` reports which objects were
taken and the loader parses the rest in Python. Bytes cross from Python to ClickHouse once, and the per-span
work runs in ClickHouse."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import jinja2
import pyarrow as pa

from orchestration.clickhouse import ClickHouse, query_rows
from orchestration.parsers.common import OBSERVATION_SCHEMA
from orchestration.parsers.otlp import (
    CLAIMS,
    GENAI_REQUEST_PREFIX,
    GENAI_TYPES,
    KIND_BY_NAME,
    KIND_NAMES,
    OBSERVATION_METADATA_PREFIX,
    RESOURCE_ENVIRONMENT_KEYS,
    STATUS_NAMES,
    TRACE_METADATA_PREFIX,
)

SOURCE = "otlp_json_input"  # temporary tables: private to the connection's session
SPANS = "otlp_json_spans"
_COLUMNS = [f.name for f in OBSERVATION_SCHEMA] + ["load_id"]
_INPUT_SCHEMA = pa.schema(
    [
        ("source_key", pa.string()),
        ("load_id", pa.string()),
        ("project_id", pa.string()),
        ("max_record", pa.uint64()),
        ("doc", pa.binary()),
    ]
)


@dataclass(frozen=True)
class RawObject:
    key: str
    project_id: str
    data: bytes  # decoded (gunzipped) OTLP/JSON


@functools.cache
def _sql() -> Any:
    env = jinja2.Environment(  # noqa: S701 (SQL, not HTML)
        loader=jinja2.PackageLoader("orchestration", "sql"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    return env.get_template("otlp_json.sql").make_module(
        {
            "source": SOURCE,
            "claims": CLAIMS,
            "claimed_keys": [key for keys in CLAIMS.values() for key in keys],
            "prefixes": {
                "trace_metadata": TRACE_METADATA_PREFIX,
                "observation_metadata": OBSERVATION_METADATA_PREFIX,
                "genai_request": GENAI_REQUEST_PREFIX,
            },
            "genai_types": GENAI_TYPES,
            "kind_by_name": KIND_BY_NAME,
            "kind_names": KIND_NAMES,
            "status_names": STATUS_NAMES,
            "resource_environment_keys": RESOURCE_ENVIRONMENT_KEYS,
        }
    )


def spans_sql() -> str:
    """The objects in ``SOURCE`` as one row per span, attributes as arrays, and what Python would check."""
    return str(_sql().spans()).strip()


def rows_sql(spans: str = SPANS) -> str:
    """The rows of ``spans`` as observations_staging rows (``_COLUMNS`` order), of objects taken whole."""
    return str(_sql().rows(spans)).strip()


def load(ch: ClickHouse, db: str, load_id: str, max_record: int, objects: list[RawObject]) -> dict[str, int]:
    """Map ``objects`` into ``db.observations_staging`` under ``load_id``; returns spans written per object
    taken (objects not taken wrote nothing). If ClickHouse fails, whatever it wrote is removed and the
    error propagates (the loader then parses every object of the group in Python)."""
    if not objects:
        return {}
    keys = [o.key for o in objects]
    threads = max(1, min(os.cpu_count() or 1, len(objects)))
    columns = ", ".join(f"{f.name} {'UInt64' if f.name == 'max_record' else 'String'}" for f in _INPUT_SCHEMA)
    ch.command(f"CREATE TEMPORARY TABLE IF NOT EXISTS {SOURCE} ({columns}) ENGINE = Memory")
    try:
        for part in range(threads):  # one block each: the Memory table is read by one thread per block
            chunk = objects[part::threads]
            ch.insert_arrow(
                SOURCE,
                pa.table(
                    {
                        "source_key": [o.key for o in chunk],
                        "load_id": [load_id] * len(chunk),
                        "project_id": [o.project_id for o in chunk],
                        "max_record": [max_record] * len(chunk),
                        "doc": [o.data for o in chunk],
                    },
                    schema=_INPUT_SCHEMA,
                ),
            )
        settings = f"SETTINGS max_threads = {threads}, max_insert_threads = {threads}"
        ch.command(f"CREATE TEMPORARY TABLE {SPANS} ENGINE = Memory AS {spans_sql()} {settings}")
        ch.command(
            f"INSERT INTO {db}.observations_staging ({', '.join(_COLUMNS)}) {rows_sql()} {settings}"  # noqa: S608
        )
    except Exception:
        ch.command(
            f"DELETE FROM {db}.observations_staging "  # noqa: S608
            "WHERE source_key IN {keys:Array(String)} AND load_id = {load:String}",
            {"keys": keys, "load": load_id},
        )
        raise
    finally:
        ch.command(f"TRUNCATE TABLE {SOURCE}")
        ch.command(f"DROP TEMPORARY TABLE IF EXISTS {SPANS}")
    rows = query_rows(
        ch,
        f"SELECT source_key, count() AS n FROM {db}.observations_staging "  # noqa: S608
        "WHERE source_key IN {keys:Array(String)} AND load_id = {load:String} GROUP BY source_key",
        {"keys": keys, "load": load_id},
    )
    return {r["source_key"]: r["n"] for r in rows}
