"""Stage 4: the historic migration of legacy tables into ``events``, one frozen ClickHouse part per partition.

``legacy_snapshot`` copies and freezes the legacy tables and registers one dynamic partition per part,
named after the part's hash bucket (``bucket-007``: a ClickHouse part name such as ``0_1_1_1`` says
nothing to a reader) and removes the partitions of an earlier snapshot; ``legacy_migration`` migrates and
verifies one part per run (the ``legacy_migration`` pool caps how many run at once). A crash leaves that
partition failed: a backfill of the missing/failed partitions resumes.
"""

import dagster as dg
from pydantic import Field

from assets.staging import table_metadata
from orchestration.migration import Part, migrate_part, parts, prepare
from orchestration.resources import ClickHouseResource, SettingsResource
from orchestration.settings import Settings

LEGACY_PARTS = dg.DynamicPartitionsDefinition(name="legacy_parts")
LEGACY_TABLES = ("observations", "traces")


def configured_definitions(settings: Settings) -> dg.Definitions:
    """The legacy tables as external assets, named after the configured legacy database."""
    return dg.Definitions(
        assets=[
            dg.AssetSpec(
                f"legacy_{table}",
                group_name="migration",
                kinds={"clickhouse"},
                description=f"{settings.legacy_database}.{table}: legacy ReplacingMergeTree table "
                "(read-only).",
                metadata={"dagster/table_name": f"{settings.legacy_database}.{table}"},
            )
            for table in LEGACY_TABLES
        ]
    )


def partition_key(part: Part, width: int = 3) -> str:
    """The Dagster partition of a frozen part: its bucket (one part per bucket after the snapshot)."""
    return f"bucket-{part.bucket.zfill(width)}"


class SnapshotConfig(dg.Config):
    rows_per_part: int = Field(default=500_000, description="target legacy rows per part (= per partition)")


@dg.asset(
    deps=[dg.AssetKey(f"legacy_{table}") for table in LEGACY_TABLES],
    group_name="migration",
    kinds={"clickhouse"},
    description="Legacy tables copied with a migration ordering (a part holds whole traces), merged to one "
    "part "
    "per partition and frozen; one dynamic partition of legacy_migration per part.",
    metadata={"dagster/table_name": "tracehouse.migration_observations"},
)
def legacy_snapshot(
    context: dg.AssetExecutionContext,
    config: SnapshotConfig,
    clickhouse: ClickHouseResource,
    settings: SettingsResource,
) -> dg.MaterializeResult:
    with clickhouse.connect() as ch:
        found = prepare(ch, rows_per_part=config.rows_per_part, legacy=settings.legacy_database)
        metadata = table_metadata(ch, "migration_observations")
    keys = [partition_key(p) for p in found]
    known = set(context.instance.get_dynamic_partitions(LEGACY_PARTS.name))
    context.instance.add_dynamic_partitions(LEGACY_PARTS.name, [k for k in keys if k not in known])
    for stale in known - set(keys):  # an earlier snapshot's parts: their copies are gone
        context.instance.delete_dynamic_partition(LEGACY_PARTS.name, stale)
    return dg.MaterializeResult(
        metadata={**metadata, "parts": len(keys), "dagster/row_count": sum(p.rows for p in found)}
    )


@dg.asset(
    deps=[legacy_snapshot],
    partitions_def=LEGACY_PARTS,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
    pool="legacy_migration",
    group_name="migration",
    kinds={"clickhouse"},
    description="One frozen legacy part merged (latest version per row), joined to trace attributes and "
    "appended to events, then verified: every observation of the part exactly once, attributes kept.",
    metadata={"dagster/table_name": "tracehouse.events"},
)
def legacy_migration(
    context: dg.AssetExecutionContext, clickhouse: ClickHouseResource
) -> dg.MaterializeResult:
    with clickhouse.connect() as ch:
        found = {partition_key(p): p.name for p in parts(ch)}
        if context.partition_key not in found:
            raise dg.Failure(
                description=f"{context.partition_key} is not a part of the current snapshot (re-run "
                "legacy_snapshot and backfill its partitions)"
            )
        result = migrate_part(ch, found[context.partition_key])
        table = table_metadata(ch, "events", count=False)  # the part's rows are the figures below
    metadata = {
        **table,
        "part": result.part,
        "observations": result.observations,
        "superseded_rows_removed": result.superseded,
        "live_rows_repaired": result.repaired,
        "missing": result.missing,
        "duplicates": result.duplicates,
        "attributes_lost": result.attributes_lost,
        "scores": result.scores,
        "scores_missing": result.scores_missing,
        "seconds": round(result.seconds, 2),
        "rows_per_second": round(result.observations / result.seconds) if result.seconds else 0,
    }
    if not result.verified:
        raise dg.Failure(description=f"part {result.part} failed verification", metadata=metadata)
    return dg.MaterializeResult(metadata=metadata)


@dg.asset_check(
    asset=legacy_migration,
    description="Every part of the current snapshot migrated and verified. Dagster draws a partitioned "
    "asset with no partitions green: before legacy_snapshot ran, this check says there is nothing yet.",
)
def all_parts_migrated(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    partitions = set(context.instance.get_dynamic_partitions(LEGACY_PARTS.name))
    done = set(context.instance.get_materialized_partitions(legacy_migration.key)) & partitions
    outstanding = sorted(partitions - done)
    return dg.AssetCheckResult(
        passed=bool(partitions) and not outstanding,
        severity=dg.AssetCheckSeverity.WARN,  # a migration under way is not an error
        metadata={
            "parts": len(partitions),
            "parts_migrated": len(done),
            "parts_outstanding": len(outstanding),
            "first_outstanding": ", ".join(outstanding[:10]),
            "state": _migration_state(len(partitions), len(outstanding)),
        },
    )


def _migration_state(parts: int, outstanding: int) -> str:
    if not parts:
        return "no snapshot yet: materialize legacy_snapshot"
    return "under way: backfill the missing partitions" if outstanding else "migrated"


snapshot_legacy = dg.define_asset_job(
    "snapshot_legacy",
    selection=dg.AssetSelection.assets(legacy_snapshot),
    description="Copy and freeze the legacy tables; registers one legacy_migration partition per part "
    "(CLI: tracehouse migrate runs it, then one migrate_legacy run per part).",
)

migrate_legacy = dg.define_asset_job(
    "migrate_legacy",
    selection=dg.AssetSelection.assets(legacy_migration),
    description="Migrate legacy parts (launch a backfill of missing/failed partitions to resume).",
)
