"""Versioned, idempotent DDL applied at start-up and recorded in ``schema_migrations``.

Each ``ddl/NNNN_name.sql`` file is one migration: Jinja-rendered statements separated by ``;`` at the end of
a line. Every statement is written to be safe to run twice (``IF NOT EXISTS``), so a crash between a
statement and the bookkeeping row simply re-runs the migration. The same files render a cluster form
(``ON CLUSTER``, ``Replicated*MergeTree``) when ``cluster`` is given.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jinja2
import sqlglot

from orchestration.clickhouse import ClickHouse, query_rows, replicated
from orchestration.columns import column_names
from orchestration.lineage import Lineage, select_lineage
from orchestration.settings import CORE_TRUNCATE_CHARS, DATABASE, ConfigError
from orchestration.sql_macros import TRACE_FIELDS, latest_attributes_sql, rank_sql, visible_sql

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    template: str


@functools.cache  # the files ship with the code: read once per process, not on every connection's check
def load_migrations() -> tuple[Migration, ...]:
    found = []
    for entry in resources.files("orchestration").joinpath("ddl").iterdir():
        match = _FILE_RE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    return tuple(sorted(found, key=lambda m: m.version))


def render(template: str, db: str = DATABASE, cluster: str | None = None, **extra: object) -> list[str]:
    """Render one migration into its statements."""

    def engine(kind: str) -> str:
        if not cluster:
            return f"{kind}()"
        return replicated(kind)

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701 (SQL, not HTML)
    text = env.from_string(template).render(
        db=db, cluster=cluster, on_cluster=f"ON CLUSTER {cluster}" if cluster else "", engine=engine, **extra
    )
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [stmt.strip() for stmt in re.split(r";\s*\n", text + "\n") if stmt.strip()]


def _template_values(core_truncate_chars: int) -> dict[str, object]:
    """Values the DDL templates take from code and configuration."""
    from orchestration.refresh import CHANGE_LOG_DAYS

    return {
        "trace_fields": [(name, type_) for name, type_, _ in TRACE_FIELDS],
        "trace_fields_set": [(name, type_, is_set.format(c=name)) for name, type_, is_set in TRACE_FIELDS],
        "rank": rank_sql,
        "visible": visible_sql,
        "latest_attributes": latest_attributes_sql,
        "core_truncate_chars": core_truncate_chars,
        "change_log_days": CHANGE_LOG_DAYS,
    }


_BOOKKEEPING = """
CREATE DATABASE IF NOT EXISTS {{ db }} {{ on_cluster }};
CREATE TABLE IF NOT EXISTS {{ db }}.schema_migrations {{ on_cluster }}
(version UInt32, name String, applied_at DateTime64(6, 'UTC') DEFAULT now64(6))
ENGINE = {{ engine('MergeTree') }} ORDER BY version;
"""


def render_all(
    db: str = DATABASE, cluster: str | None = None, core_truncate_chars: int = CORE_TRUNCATE_CHARS
) -> list[str]:
    """Every statement of the schema, in order (what ``apply_migrations`` runs on an empty server)."""
    statements = render(_BOOKKEEPING, db, cluster)
    for migration in load_migrations():
        statements += render(migration.template, db, cluster, **_template_values(core_truncate_chars))
    return statements


@functools.cache  # renders the whole schema: once per process, not in every propagation that writes rows
def view_lineage(view: str, db: str = DATABASE) -> Lineage:
    """The column lineage of what materialized view ``view`` writes, read from its DDL (the last migration
    that creates it)."""
    statement = [s for s in render_all(db) if re.match(rf"CREATE MATERIALIZED VIEW .*\b{view}\b", s)][-1]
    select = sqlglot.parse_one(statement, dialect="clickhouse").expression
    tables = {t.name for t in select.find_all(sqlglot.exp.Table)}
    return select_lineage(select, {db: {t: dict.fromkeys(column_names(t), "String") for t in tables}})


class SchemaBehind(ConfigError):
    """ClickHouse's schema is older than the code: the deployment step that applies it has not run."""


def schema_version(ch: ClickHouse, db: str = DATABASE) -> int:
    """The last migration applied to ``db`` (0: none, not even the bookkeeping table)."""
    if not query_rows(ch, f"EXISTS TABLE {db}.schema_migrations")[0]["result"]:  # noqa: S608
        return 0
    return int(query_rows(ch, f"SELECT max(version) AS v FROM {db}.schema_migrations")[0]["v"])  # noqa: S608


def require_current(ch: ClickHouse, db: str = DATABASE) -> None:
    """Refuse to read or write a schema older than the code, saying which step applies it."""
    have, want = schema_version(ch, db), load_migrations()[-1].version
    if have < want:
        raise SchemaBehind(
            f"the ClickHouse schema of {db} is at migration {have:04d} and this code needs {want:04d}: run "
            "`tracehouse schema` (or materialize clickhouse_schema in Dagster) before anything else"
        )


def apply_migrations(
    ch: ClickHouse, db: str = DATABASE, core_truncate_chars: int = CORE_TRUNCATE_CHARS
) -> list[int]:
    """Apply pending migrations in order; returns the versions applied now (``core_truncate_chars``:
    TRACEHOUSE_CORE_TRUNCATE_CHARS, the text events_core's materialized view keeps).

    On a connection to a cluster (``ch.cluster``, CLICKHOUSE_CLUSTER) every statement is rendered
    ``ON CLUSTER`` with Replicated engines, plus Distributed tables for reads.
    """
    cluster = ch.cluster
    for statement in render(_BOOKKEEPING, db, cluster):
        ch.command(statement)
    done = {row["version"] for row in query_rows(ch, f"SELECT DISTINCT version FROM {db}.schema_migrations")}  # noqa: S608
    applied = []
    values = _template_values(core_truncate_chars)
    for migration in load_migrations():
        if migration.version in done:
            continue
        for statement in render(migration.template, db=db, cluster=cluster, **values):
            ch.command(statement)
        ch.command(
            f"INSERT INTO {db}.schema_migrations (version, name) VALUES ({{v:UInt32}}, {{n:String}})",  # noqa: S608
            {"v": migration.version, "n": migration.name},
        )
        applied.append(migration.version)
    return applied


def columns_snapshot(ch: ClickHouse, db: str = DATABASE) -> dict[str, dict[str, str]]:
    """Every table's and view's columns and types in ``db``, in order, as ``ddl/columns.json`` holds them."""
    rows = query_rows(
        ch,
        "SELECT table, name, type FROM system.columns WHERE database = {db:String} ORDER BY table, position",
        {"db": db},
    )
    tables: dict[str, dict[str, str]] = {}
    for row in rows:
        if row["table"] != "schema_migrations":
            tables.setdefault(row["table"], {})[row["name"]] = row["type"]
    return tables


def write_columns_file() -> Path:
    """Apply the migrations to an empty embedded ClickHouse and write what they created to the file."""
    import tempfile

    from orchestration.clickhouse import open_clickhouse
    from orchestration.columns import COLUMNS_FILE

    target = Path(str(resources.files("orchestration.ddl").joinpath(COLUMNS_FILE)))
    with tempfile.TemporaryDirectory() as scratch, open_clickhouse(None, Path(scratch) / "ch") as ch:
        apply_migrations(ch)  # embedded: the single-node form (columns do not depend on it)
        target.write_text(json.dumps(columns_snapshot(ch), indent=1) + "\n")
    return target


if __name__ == "__main__":
    print(f"wrote {write_columns_file()}")
