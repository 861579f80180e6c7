"""Stage 0: the ClickHouse schema, applied as its own step before anything reads or writes.

The ClickHouse resource refuses a schema older than the code. ``tracehouse schema`` runs ``apply_schema``;
``tracehouse dev`` and every command that does pipeline work run it first; a deployment runs it after each
upgrade, before the daemon starts (docs/operations.md). Migrations are idempotent: a re-run applies nothing.
"""

import dagster as dg

from orchestration.faults import run_failures
from orchestration.resources import ClickHouseResource, SettingsResource
from orchestration.schema import apply_migrations, load_migrations, schema_version


@dg.asset(
    group_name="setup",
    kinds={"clickhouse"},
    description="The tracehouse database in ClickHouse at the code's schema: the pending DDL migrations of "
    "orchestration/ddl/ applied in order, each recorded in schema_migrations.",
    metadata={"dagster/table_name": "tracehouse.schema_migrations"},
)
def clickhouse_schema(
    context: dg.AssetExecutionContext, clickhouse: ClickHouseResource, settings: SettingsResource
) -> dg.MaterializeResult:
    with run_failures(retry=False), clickhouse.connect(schema_checked=False) as ch:  # a fault: one line
        applied = apply_migrations(ch, core_truncate_chars=settings.core_truncate_chars)
        version = schema_version(ch)
    names = {m.version: m.name for m in load_migrations()}
    context.log.info(f"{len(applied)} migrations applied; schema at {version:04d}")
    return dg.MaterializeResult(
        metadata={
            "schema_version": version,
            "migrations_applied": ", ".join(f"{v:04d}_{names[v]}" for v in applied) or "none (up to date)",
        }
    )


apply_schema = dg.define_asset_job(
    "apply_schema",
    selection=dg.AssetSelection.assets(clickhouse_schema),
    description="Apply pending ClickHouse migrations (CLI: tracehouse schema; the other commands run it "
    "first).",
)
