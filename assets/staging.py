"""Stage 1: raw S3 objects into the ClickHouse staging tables (plus the ingest ledger and quarantine).

One multi-asset, because one load writes all of them in one protocol (see ``orchestration/loader.py``).
The sensor passes the keys of a batch in run config; ``scan_all`` (the reconciliation schedule and
``tracehouse run-once``) loads every object in the bucket the ledger has not committed.
"""

import re
from collections.abc import Mapping
from contextlib import ExitStack

import dagster as dg
from pydantic import Field

from orchestration.clickhouse import ClickHouse, query_rows, query_scalar
from orchestration.column_docs import describe
from orchestration.faults import run_failures
from orchestration.lineage import Lineage, lineage_markdown
from orchestration.loader import STAGING_TABLES, LoadReport, load_objects
from orchestration.reconcile import pending_keys
from orchestration.resources import ClickHouseResource, RawBucketS3, SettingsResource
from orchestration.settings import DATABASE

QUARANTINE_KEY = dg.AssetKey("ingest_quarantine")
STAGING_OP_NAME = "staging_tables"  # the op of the staging multi-asset, in run config
_DESCRIPTIONS = {
    "observations_staging": "Observation rows as they arrived (creates and legacy patches).",
    "traces_staging": "Trace-level records from legacy trace-create events; the latest non-empty field wins.",
    "scores_staging": "Scores from legacy batches and the scores API.",
}
_SCALARS = (
    ("UInt", "int"),
    ("Int", "int"),
    ("Float", "float"),
    ("Decimal", "decimal"),
    ("Bool", "bool"),
    ("DateTime", "timestamp"),
    ("Date", "date"),
    ("String", "string"),
    ("UUID", "string"),
)
_WRAPPER = re.compile(r"^(?:Nullable|LowCardinality)\((.*)\)$")


def column_type(clickhouse_type: str) -> str:
    """A column's type as Dagster shows it: scalars by family (``Nullable``/``LowCardinality`` unwrapped),
    composite types as ClickHouse spells them (``Map(String, UInt64)`` is not an int)."""
    inner = clickhouse_type
    while match := _WRAPPER.match(inner):
        inner = match.group(1)
    if "(" in inner and not inner.startswith(("Decimal", "DateTime", "FixedString")):
        return clickhouse_type
    return next((name for prefix, name in _SCALARS if inner.startswith(prefix)), clickhouse_type)


class StagingLoadConfig(dg.Config):
    keys: list[str] = Field(default_factory=list, description="raw object keys to load (set by the sensor)")
    scan_all: bool = Field(default=False, description="also load every object the ledger has not committed")
    retry: bool = Field(default=True, description="retry faults (S3, ClickHouse away); the CLI fails at once")


def lineage_metadata(lineage: Lineage) -> dict[str, object]:
    """Column lineage for Dagster (``dagster/column_lineage``, drawn only in Dagster+) and as a table the
    open-source UI shows."""
    deps = {c: [dg.TableColumnDep(dg.AssetKey(t), name) for t, name in d] for c, d in lineage.items() if d}
    return {
        "dagster/column_lineage": dg.TableColumnLineage(deps_by_column=deps),
        "column_lineage": dg.MetadataValue.md(lineage_markdown(lineage)),
    }


def table_metadata(
    ch: ClickHouse,
    table: str,
    db: str = DATABASE,
    count: bool = True,
    descriptions: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """The standard Dagster table metadata, read from ClickHouse itself (``count=False``: no row count, for a
    view that aggregates). Column descriptions: ``descriptions`` (a model's own), else
    ``orchestration/column_docs.py``."""
    columns = query_rows(
        ch,
        "SELECT name, type, comment FROM system.columns WHERE database = {db:String} AND table = {t:String} "
        "ORDER BY position",
        {"db": db, "t": table},
    )
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn(
                c["name"],
                column_type(c["type"]),
                description=(descriptions or {}).get(c["name"]) or c["comment"] or describe(table, c["name"]),
            )
            for c in columns
        ]
    )
    metadata: dict[str, object] = {"dagster/table_name": f"{db}.{table}", "dagster/column_schema": schema}
    if count:
        metadata["dagster/row_count"] = query_scalar(ch, f"SELECT count() FROM {db}.{table}")  # noqa: S608
    return metadata


def append_only_version(ch: ClickHouse, table: str, db: str = DATABASE) -> dg.DataVersion:
    """The data version of an append-only staging table: its generation (the table's UUID), not its content.

    Propagation consumes staging in time windows behind a delay, on purpose; an append is not a reason to
    call ``events`` "Unsynced" (it would be, permanently, between every two windows). How far behind
    ``events`` is shows as ``watermark_lag_seconds`` on each propagation and in the ``events_complete``
    check; "Unsynced" means a staging table was recreated, which is when ``events`` must be rebuilt."""
    uuid = query_scalar(
        ch,
        "SELECT toString(uuid) FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        {"db": db, "t": table},
    )
    return dg.DataVersion(f"append-only:{uuid}")


def outstanding_quarantine(ch: ClickHouse, limit: int = 50, db: str = DATABASE) -> tuple[int, list[dict]]:
    """Objects whose latest ledger state is ``quarantined``: not yet resolved (an object fixed by re-uploading
    it under the same key loads again and leaves this list). Returns (how many, the first ``limit``).

    Runs with every load, so it reads the ledger rows of ever-quarantined keys only (the quarantine table
    names them; the ledger is sorted by key), not the whole ledger."""
    rows = query_rows(
        ch,
        "SELECT source_key, reason, count() OVER () AS total FROM ("  # noqa: S608
        f"SELECT source_key, argMax(reason, recorded_at) AS reason FROM {db}.ingest_ledger "
        f"WHERE source_key IN (SELECT source_key FROM {db}.quarantine) "
        "GROUP BY source_key HAVING argMax(status, recorded_at) = 'quarantined') "
        "ORDER BY source_key LIMIT {limit:UInt32}",
        {"limit": limit},
    )
    return (rows[0]["total"] if rows else 0), rows


def _unmapped_metadata(report: LoadReport) -> dict[str, dg.MetadataValue]:
    """Values kept in metadata because no column could take them: how many, and where, this run."""
    objects = report.with_unmapped
    lines = ["| object | note |", "|---|---|"] + [f"| {o.key} | {o.note} |" for o in objects[:20]]
    return {
        "unmapped_values_this_run": dg.MetadataValue.int(sum(o.unmapped for o in objects)),
        "objects_with_unmapped_values": dg.MetadataValue.md("\n".join(lines) if objects else "none"),
    }


def _quarantine_table(rows: list[dict], total: int) -> dg.MetadataValue:
    lines = ["| object | reason |", "| --- | --- |"]
    for row in rows:
        reason = row["reason"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{row['source_key']}` | {reason} |")
    if total > len(rows):
        lines.append(f"| … | {total - len(rows)} more in {DATABASE}.quarantine |")
    return dg.MetadataValue.md("\n".join(lines))


@dg.multi_asset(
    name="staging_tables",
    specs=[
        *[
            dg.AssetSpec(
                t,
                deps=["raw_batches"],
                group_name="ingest",
                kinds={"clickhouse"},
                description=_DESCRIPTIONS[t],
            )
            for t in STAGING_TABLES
        ],
        dg.AssetSpec(
            QUARANTINE_KEY,
            deps=["raw_batches"],
            group_name="ingest",
            kinds={"clickhouse"},
            description="Raw objects that could not be loaded, with the reason (tracehouse.quarantine).",
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec(
            "no_outstanding_quarantined_objects",
            asset=QUARANTINE_KEY,
            description="Warns while any quarantined object is unresolved (whichever run quarantined it); "
            "lists them. Re-uploading the object fixed, under the same key, resolves it.",
        )
    ],
    pool="clickhouse",
    # S3 or ClickHouse briefly away: retry the whole load (the ledger makes that safe)
    retry_policy=dg.RetryPolicy(max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL),
)
def staging_tables(
    context: dg.AssetExecutionContext,
    config: StagingLoadConfig,
    clickhouse: ClickHouseResource,
    s3: RawBucketS3,
    settings: SettingsResource,
):
    report = LoadReport()
    with ExitStack() as stack:
        with run_failures(retry=config.retry):  # a fault an operator can fix reads as one line in the UI
            client = s3.get_client()
            ch = stack.enter_context(clickhouse.connect())
            batches: list[dict[str, str]] = [dict.fromkeys(config.keys, "")] if config.keys else []
            if config.scan_all:
                batches = [*batches, *pending_keys(ch, client, settings)]
            for page in batches:
                report.add(
                    load_objects(ch, client, list(page), settings, run_id=context.run.run_id, etags=page)
                )
        for o in report.quarantined:
            context.log.warning(f"quarantined {o.key}: {o.reason}")
        for note in report.notes:
            context.log.warning(note)
        for reason, count in report.skipped_by_reason().items():
            context.log.info(f"skipped {count} objects: {reason}")
        for o in report.with_unmapped:
            context.log.warning(f"loaded {o.key} with {o.note}")
        context.log.info(
            f"loaded {report.count('loaded')} objects ({report.bytes_loaded} bytes), quarantined "
            f"{report.count('quarantined')}, skipped {report.count('skipped')} already done"
        )
        for table in STAGING_TABLES:
            yield dg.MaterializeResult(
                asset_key=table,
                data_version=append_only_version(ch, table),
                metadata={
                    **table_metadata(ch, table),
                    "rows_loaded": report.rows(table.removesuffix("_staging")),
                    **(_unmapped_metadata(report) if table == "observations_staging" else {}),
                },
            )
        total, first = outstanding_quarantine(ch)
        table = _quarantine_table(first, total)
        yield dg.MaterializeResult(
            asset_key=QUARANTINE_KEY,
            metadata={
                **table_metadata(ch, "quarantine"),
                "quarantined_this_run": len(report.quarantined),
                "quarantined_outstanding": total,
                "objects_loaded_this_run": report.count("loaded"),
                "objects_skipped_this_run": report.count("skipped"),
                "outstanding_objects": table,
                "load_summary": dg.MetadataValue.json(report.summary()),
            },
        )
        yield dg.AssetCheckResult(
            check_name="no_outstanding_quarantined_objects",
            asset_key=QUARANTINE_KEY,
            passed=total == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "outstanding": total,
                "quarantined_this_run": len(report.quarantined),
                "objects": table,
            },
        )


load_raw_batches = dg.define_asset_job(
    "load_raw_batches",
    selection=dg.AssetSelection.assets(staging_tables),
    description="Load raw S3 objects into staging (launched by raw_bucket_sensor with the keys of a batch).",
)

reconcile_raw_bucket = dg.define_asset_job(
    "reconcile_raw_bucket",
    selection=dg.AssetSelection.assets(staging_tables),
    description="Diff the whole raw bucket against the ingest ledger and load anything not yet committed.",
    config={"ops": {STAGING_OP_NAME: {"config": StagingLoadConfig(scan_all=True).model_dump()}}},
)

reconcile_schedule = dg.ScheduleDefinition(
    name="reconcile_raw_bucket_hourly",
    job=reconcile_raw_bucket,
    cron_schedule="17 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Safety net behind the sensor: late objects under old keys load within the hour.",
)
