"""Shared pieces of the raw-format parsers: staging row shapes, value coercion, and the bad-input error.

Parsers turn one raw object into staging rows or raise :class:`BadObject` with a reason a person can act
on; the loader quarantines the object with that reason. Rows are plain dicts until the loader turns a
whole chunk into Arrow with the schemas below (read from the staging tables' DDL).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa

from orchestration.columns import catalogue


class BadObject(ValueError):
    """A raw object that cannot be loaded; ``str(exc)`` is the quarantine reason."""


_TS = pa.timestamp("us", tz="UTC")
_SCALARS = {
    "String": pa.string(),
    "Bool": pa.bool_(),
    "UInt32": pa.uint32(),
    "UInt64": pa.uint64(),
    "Float64": pa.float64(),
    "DateTime64(6, 'UTC')": _TS,
}
_WRAPPED = re.compile(r"^(Nullable|LowCardinality|Array|Map)\((.*)\)$")
# Set by the loader, not by a parser: which load wrote a row, and when.
LOADER_COLUMNS = ("load_id", "ingested_at")


def arrow_type(clickhouse_type: str) -> pa.DataType:
    """The Arrow type a parser fills for a staging column of ``clickhouse_type``."""
    if clickhouse_type in _SCALARS:
        return _SCALARS[clickhouse_type]
    match = _WRAPPED.match(clickhouse_type)
    if match is None:
        raise TypeError(f"no Arrow type for ClickHouse type {clickhouse_type} (add it to parsers/common.py)")
    wrapper, inner = match.groups()
    if wrapper == "Array":
        return pa.list_(arrow_type(inner))
    if wrapper == "Map":
        key, value = (part.strip() for part in inner.split(",", 1))
        return pa.map_(arrow_type(key), arrow_type(value))
    return arrow_type(inner)  # Nullable (default None, below) and LowCardinality change no Arrow type


def staging_schema(table: str) -> pa.Schema:
    """The Arrow schema of a staging table's rows, read from the DDL (``orchestration/columns.py``)."""
    return pa.schema(
        [(name, arrow_type(type_)) for name, type_ in catalogue()[table] if name not in LOADER_COLUMNS]
    )


OBSERVATION_SCHEMA = staging_schema("observations_staging")
TRACE_SCHEMA = staging_schema("traces_staging")
SCORE_SCHEMA = staging_schema("scores_staging")

# Nullable columns stay None; the rest get ClickHouse's defaults so rows are complete before Arrow.
_NULLABLE = {
    name
    for table in ("observations_staging", "traces_staging", "scores_staging")
    for name, type_ in catalogue()[table]
    if type_.startswith("Nullable(")
}


def _defaults(schema: pa.Schema) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in schema:
        if f.name in _NULLABLE:
            out[f.name] = None
        elif pa.types.is_map(f.type):
            out[f.name] = {}
        elif pa.types.is_list(f.type):
            out[f.name] = []
        elif pa.types.is_boolean(f.type):
            out[f.name] = False
        else:
            out[f.name] = ""
    return out


OBSERVATION_DEFAULTS = _defaults(OBSERVATION_SCHEMA)
TRACE_DEFAULTS = _defaults(TRACE_SCHEMA)
SCORE_DEFAULTS = _defaults(SCORE_SCHEMA)


@dataclass
class ParsedObject:
    observations: list[dict[str, Any]] = field(default_factory=list)
    traces: list[dict[str, Any]] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    arrow_observations: pa.Table | None = None  # formats that arrive columnar (Parquet) skip the dicts
    unmapped: list[str] = field(default_factory=list)  # values no column could take (kept in metadata)

    @property
    def observation_count(self) -> int:
        extra = self.arrow_observations.num_rows if self.arrow_observations is not None else 0
        return len(self.observations) + extra

    @property
    def rows(self) -> int:
        return self.observation_count + len(self.traces) + len(self.scores)


def to_arrow(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    try:
        return pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise BadObject(f"value does not fit its column: {exc}") from exc


# --- value coercion -----------------------------------------------------------------------------

_MIN_US = -2_208_988_800_000_000  # 1900-01-01, ClickHouse DateTime64 lower bound
_MAX_US = 7_258_118_400_000_000  # 2200-01-01


def check_us(value: int, what: str) -> int:
    if not _MIN_US <= value <= _MAX_US:
        raise BadObject(f"{what} is out of range (1900..2200): {value} microseconds since epoch")
    return value


def iso_to_us(value: Any, what: str) -> int | None:
    """ISO-8601 string (or epoch number) to microseconds since epoch; None when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise BadObject(f"{what} is not a timestamp: {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise BadObject(f"{what} is not a finite number")
        if value < 0:
            raise BadObject(f"{what} is a negative epoch time: {value!r}")
        seconds = value / 1000 if value > 1e11 else value  # epoch millis or seconds
        return check_us(int(seconds * 1_000_000), what)
    if not isinstance(value, str):
        raise BadObject(f"{what} is not a timestamp: {type(value).__name__}")
    text = value.strip()
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise BadObject(f"{what} is not an ISO-8601 timestamp: {text[:64]!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return check_us(_exact_us(dt), what)


def _exact_us(dt: datetime) -> int:
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def nanos_to_us(value: Any, what: str) -> int | None:
    if value in (None, "", 0, "0"):
        return None
    try:
        nanos = int(value)
    except (TypeError, ValueError):
        raise BadObject(f"{what} is not an integer of nanoseconds: {str(value)[:64]!r}") from None
    if nanos < 0:
        raise BadObject(f"{what} is negative: {nanos} nanoseconds since epoch (before 1970)")
    return check_us(nanos // 1000, what)


def hex_id(value: Any, size: int, what: str) -> str:
    """OTLP ids as lowercase hex whichever encoding arrived (hex per OTLP/JSON, base64 from protobuf JSON)."""
    if isinstance(value, bytes):
        raw = value
    elif isinstance(value, str):
        text = value.strip()
        if len(text) == size * 2:
            try:
                bytes.fromhex(text)
                return text.lower()
            except ValueError:
                pass
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise BadObject(f"{what} is neither hex nor base64: {text[:64]!r}") from None
    else:
        raise BadObject(f"{what} has type {type(value).__name__}")
    if len(raw) != size:
        raise BadObject(f"{what} must be {size} bytes, got {len(raw)}")
    return raw.hex()


def json_text(value: Any) -> str:
    """Inputs, outputs and parameters are stored as JSON text; plain strings stay as they are."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise BadObject(f"value cannot be encoded as JSON: {exc}") from exc


def string_map(value: Any, what: str) -> dict[str, str]:
    """Metadata as Map(String, String): nested values become JSON text, JSON-encoded strings are unwrapped."""
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return {"value": value}
    if not isinstance(value, dict):
        return {"value": json_text(value)}
    return {str(k): v if isinstance(v, str) else json_text(v) for k, v in value.items()}


def total_cost_of(cost: dict[str, float]) -> float | None:
    if not cost:
        return None
    return cost["total"] if "total" in cost else sum(cost.values())


def check_record_size(row: dict[str, Any], limit: int, what: str) -> None:
    size = len(row.get("input", "")) + len(row.get("output", ""))
    for key in ("metadata", "trace_metadata"):
        for k, v in row.get(key, {}).items():
            size += len(k) + len(v)
    if size > limit:
        raise BadObject(f"{what} is {size} bytes, over the per-record limit of {limit} bytes")


def tag_list(value: Any, what: str) -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        try:
            value = orjson.loads(value) if value.startswith("[") else [t for t in value.split(",") if t]
        except orjson.JSONDecodeError:
            raise BadObject(f"{what} is not a list: {value[:64]!r}") from None
    if not isinstance(value, list):
        raise BadObject(f"{what} must be a list of strings")
    return sorted({str(v) for v in value})
