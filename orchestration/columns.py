"""The columns of every table and view the schema migrations create, in order, as ClickHouse reports them.

``ddl/columns.json`` is generated from the DDL (``python -m orchestration.schema``: the migrations applied to
an empty embedded ClickHouse, then ``system.columns``) and a test fails when it no longer matches, like a
lock file. The DDL stays the one declaration: the parsers' Arrow schemas, the columns propagation writes
and the models' lineage sources are read from here instead of being written out again.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

COLUMNS_FILE = "columns.json"


@functools.cache
def catalogue() -> dict[str, tuple[tuple[str, str], ...]]:
    """Table or view name → its ``(column, ClickHouse type)`` pairs, in table order."""
    text = resources.files("orchestration.ddl").joinpath(COLUMNS_FILE).read_text()
    return {table: tuple(cols.items()) for table, cols in json.loads(text).items()}


def column_names(table: str) -> list[str]:
    return [name for name, _ in catalogue()[table]]
