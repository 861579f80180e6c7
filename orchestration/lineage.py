"""Column lineage read from SQL with sqlglot: which (table, column) pairs each output column is computed from.

The models (``dbt_like_sql/``) and the propagation's insert into ``events`` both derive their
``dagster/column_lineage`` here, from the SQL that runs, so the lineage cannot drift from the code.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlglot
from sqlglot import exp
from sqlglot.lineage import lineage

Lineage = dict[str, list[tuple[str, str]]]
Schema = dict[str, dict[str, dict[str, str]]]  # {database: {table: {column: type}}}
UNRESOLVED = ""  # the "table" of a name sqlglot could not resolve (a ClickHouse alias used across columns)


def select_lineage(
    select: str | exp.Query, schema: Schema, table_name: Callable[[str], str] = str
) -> Lineage:
    """For each output column of ``select``: the (table, column) pairs it is computed from.

    ``table_name`` maps a table as the SQL names it to the name the lineage reports. A constant (``now()``)
    has no pairs; an aggregate of no column (``count()``) depends on the rows, reported as the table's row
    key."""
    columns = {t: cols for db in schema.values() for t, cols in db.items()}
    # untrimmed selects: the same lineage, without a deep copy of the query per node (3x faster; this runs
    # when the code location loads, i.e. in every run and step process)
    graph = lineage(None, select, schema, dialect="clickhouse", trim_selects=False)
    result: Lineage = {}
    for column, node in graph.items():
        deps = set()
        for leaf in node.walk():
            if leaf.downstream:
                continue
            if isinstance(leaf.source, exp.Table):
                deps.add((table_name(leaf.source.name), leaf.name.split(".")[-1]))
            elif isinstance(leaf.source, exp.Placeholder):
                deps.add((UNRESOLVED, leaf.name))
            elif leaf.expression.find(exp.AggFunc):
                for table in leaf.source.find_all(exp.Table):
                    deps.add((table_name(table.name), _row_key(columns.get(table.name, {}))))
        result[column] = sorted(deps)
    return result


def insert_lineage(insert_sql: str, schema: Schema, columns: list[str] | None = None) -> Lineage:
    """The lineage of ``INSERT INTO t (columns) SELECT ...`` by inserted column (the SELECT's own names do not
    matter; ``columns`` are the table's, for an insert that lists none). A ClickHouse alias defined inside
    one column's expression and used in another (``... AS price_``) brings that column's sources."""
    insert = sqlglot.parse_one(insert_sql, dialect="clickhouse")
    select = insert.expression
    columns = [c.name for c in insert.this.expressions] or columns or []
    if len(columns) != len(select.selects):
        raise ValueError(f"{len(columns)} columns inserted from {len(select.selects)} expressions")
    defined_in = {
        alias.alias: column
        for column, projection in zip(columns, select.selects, strict=True)
        for alias in projection.unalias().find_all(exp.Alias)
    }
    select.set(
        "expressions", [exp.alias_(p.unalias(), c) for c, p in zip(columns, select.selects, strict=True)]
    )
    raw = select_lineage(select, schema)
    known = {(table, c) for tables in schema.values() for table, cols in tables.items() for c in cols}

    def real(deps: list[tuple[str, str]]) -> set[tuple[str, str]]:
        return {d for d in deps if d in known}

    result: Lineage = {}
    for column, deps in raw.items():
        found = real(deps)
        for _, name in set(deps) - found:  # an alias sqlglot took for a column, or could not resolve
            if defined_in.get(name, column) != column:
                found |= real(raw[defined_in[name]])
        result[column] = sorted(found)
    return result


def _row_key(columns: dict[str, str]) -> str:
    return next((c for c in ("id", "trace_id", "session_id") if c in columns), next(iter(columns), ""))


def lineage_markdown(deps_by_column: Lineage) -> str:
    """Column lineage as a table the open-source Dagster UI shows (it draws lineage only in Dagster+)."""
    lines = ["| column | computed from |", "|---|---|"]
    for column, deps in deps_by_column.items():
        sources = ", ".join(f"{table}.{col}" for table, col in deps) or "(a constant)"
        lines.append(f"| {column} | {sources} |")
    return "\n".join(lines)
