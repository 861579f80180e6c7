"""Parquet batches of already-flat observations (bulk loads, benchmarks).

Columns are the ``observations_staging`` columns; ``id``, ``trace_id`` and ``start_time`` are required, the
rest default. The project comes from the object key; a ``project_id`` column that disagrees is an error.
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from orchestration.parsers.common import OBSERVATION_DEFAULTS, OBSERVATION_SCHEMA, BadObject

_REQUIRED = ("id", "trace_id", "start_time")
_BIG_STRINGS = ("input", "output")


def parse_parquet(data: bytes, *, project_id: str, source_key: str, max_record: int) -> pa.Table:
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise BadObject(f"invalid Parquet: {exc}") from None
    missing = [c for c in _REQUIRED if c not in table.column_names]
    if missing:
        raise BadObject(f"Parquet batch lacks required columns: {', '.join(missing)}")
    if table.num_rows == 0:
        raise BadObject("Parquet batch holds no rows")
    if "project_id" in table.column_names:
        others = set(pc.unique(table["project_id"]).to_pylist()) - {project_id}
        if others:
            raise BadObject(
                f"Parquet rows name project(s) {sorted(others)[:3]} but the key says {project_id!r}"
            )
    n = table.num_rows
    forced = {
        "project_id": project_id,
        "source_key": source_key,
        "source_format": "parquet",
        "is_update": False,
    }
    columns = []
    for field in OBSERVATION_SCHEMA:
        if field.name in forced:
            columns.append(pa.array([forced[field.name]] * n, field.type))
        elif field.name in table.column_names:
            try:
                columns.append(table[field.name].cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise BadObject(
                    f"Parquet column {field.name} cannot be read as {field.type}: {exc}"
                ) from None
        elif field.name == "event_ts":
            columns.append(table["start_time"].cast(field.type))
        else:
            columns.append(pa.array([OBSERVATION_DEFAULTS[field.name]] * n, field.type))
    out = pa.Table.from_arrays(columns, schema=OBSERVATION_SCHEMA)
    if out["id"].null_count or out["trace_id"].null_count or out["start_time"].null_count:
        raise BadObject("Parquet rows with null id, trace_id or start_time")
    size = pc.add(
        pc.binary_length(pc.fill_null(out["input"], "")), pc.binary_length(pc.fill_null(out["output"], ""))
    )
    biggest = pc.max(size).as_py() or 0
    if biggest > max_record:
        raise BadObject(f"a Parquet row is {biggest} bytes, over the per-record limit of {max_record} bytes")
    return out
