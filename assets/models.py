"""Stage 3: the SQL models of ``dbt_like_sql/`` as Dagster assets, with lineage, checks and replays.

Incremental models are partitioned by day: one day is rebuilt with ``REPLACE PARTITION``; a backfill of
several days runs as one run (``BackfillPolicy.single_run``) that builds a shadow table and swaps it in, so
launching "materialize all partitions" from the UI is a blue/green replay. Keyed models recompute only the
keys that changed since their last build (``orchestration/refresh.py``); with ``full: true`` (the
``replay_models`` job) they are rebuilt whole. Table models are always built into a shadow table and swapped
in.
"""

import functools
from collections.abc import Iterator
from datetime import date, timedelta

import dagster as dg

from assets.staging import lineage_metadata, table_metadata
from orchestration.models import (
    Model,
    build_day,
    column_lineage,
    key_violations,
    load_models,
    rebuild,
    reconcile,
    rows_by_day,
    table_exists,
)
from orchestration.refresh import build
from orchestration.resources import ClickHouseResource, SettingsResource
from orchestration.settings import DATABASE, Settings

GROUP = "analytics"


def daily_partitions(start_date: str) -> dg.DailyPartitionsDefinition:
    """The daily models' partitions: TRACEHOUSE_START_DATE through tomorrow (today's data is still
    arriving; tomorrow's partition exists for time zones ahead of UTC)."""
    return dg.DailyPartitionsDefinition(start_date=start_date, end_offset=1)


# A model is built as soon as one of its upstream tables has new data (events only records a materialization
# when a propagation window wrote rows; keyed refreshes cost a few percent of a whole build: bench/README.md),
# or on TRACEHOUSE_MODELS_CRON's schedule after new data when set (a production cadence, e.g. "0 * * * *").
# And at once while a model (today's partition of a daily one) has never been built and its upstream tables
# exist: eager() and on_missing() ignore what is already missing when the sensor starts, so a fresh
# `make dev` would wait for the next new data. A failed build is not retried every tick.
FIRST_BUILD = (
    dg.AutomationCondition.in_latest_time_window()
    & dg.AutomationCondition.missing()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.in_progress()
    & ~dg.AutomationCondition.execution_failed()
).with_label("first_build")


def automation(cron: str | None) -> dg.AutomationCondition:
    """When the models are built: after new upstream data (eager), or on ``cron`` after new data."""
    follow = dg.AutomationCondition.on_cron(cron) if cron else dg.AutomationCondition.eager()
    return follow | FIRST_BUILD


DAYS_BUILT = "days_built"  # materialization metadata: the days a build made, what reconcile checks
FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=3), warn_window=timedelta(hours=2))


class ModelBuildConfig(dg.Config):
    full: bool = False  # keyed models: rebuild whole (a replay) instead of applying what changed


@functools.cache  # sqlglot's lineage walk: once per process, not each time the definitions are built
def _lineage(name: str) -> dict:
    return lineage_metadata(column_lineage(MODELS[name], MODELS))


def _model_asset(model: Model, settings: Settings) -> dg.AssetsDefinition:
    deps = [dg.AssetKey(name) for name in (*model.sources, *model.refs)]
    lineage = _lineage(model.name)

    @dg.asset(
        name=model.name,
        deps=deps,
        group_name=GROUP,
        kinds={"clickhouse"},
        description=model.description,
        owners=model.config.get("owners", []),
        code_version=model.code_version,
        partitions_def=daily_partitions(settings.start_date) if model.incremental else None,
        backfill_policy=dg.BackfillPolicy.single_run() if model.incremental else None,
        automation_condition=automation(settings.models_cron),
        freshness_policy=FRESHNESS,
        pool=f"analytics_{model.name}",
        metadata={
            "dagster/table_name": f"tracehouse.{model.name}",
            "materialized": model.materialized,
            "column_lineage": lineage["column_lineage"],  # the OSS UI draws the other only in Dagster+
        },
    )
    def _asset(
        context: dg.AssetExecutionContext,
        config: ModelBuildConfig,
        clickhouse: ClickHouseResource,
        settings: SettingsResource,
    ):
        width = settings.core_truncate_chars
        with clickhouse.connect() as ch:
            built: dict = {}
            if not model.incremental:
                result = build(ch, model, full=config.full, truncate_chars=width)
                rows = result.rows
                built = {
                    "build": "whole" if result.full else "changed keys",
                    "build_reason": result.reason,
                    "changed_keys": result.changed_keys,
                    "partitions_replaced": len(result.partitions),
                }
            elif len(context.partition_keys) == 1:
                day = date.fromisoformat(context.partition_key)
                rows = build_day(ch, model, day, truncate_chars=width)
            else:
                days = [date.fromisoformat(k) for k in context.partition_keys]
                rebuild(ch, model, days, truncate_chars=width)
                by_day = rows_by_day(ch, model)
                rows = sum(by_day.get(d, 0) for d in days)  # the days' rows, not the table's
            context.log.info(f"{model.name}: {rows} rows built {built}")
            metadata = {
                **table_metadata(ch, model.name, descriptions=model.columns),
                "rows_built": rows,
                **built,
                **lineage,
            }
            if model.incremental:
                metadata[DAYS_BUILT] = ", ".join(context.partition_keys)  # what the reconcile check checks
            if model.incremental and len(context.partition_keys) == 1:
                # a day's materialization reports that day's rows, not the whole table's
                metadata["table_rows"] = metadata["dagster/row_count"]
                metadata["dagster/row_count"] = rows
            yield dg.MaterializeResult(metadata=metadata)

    return _asset


def _days_built(context: dg.AssetCheckExecutionContext, model: Model) -> list[date] | None:
    """The days the latest build of an incremental model made (``None``: the whole table). A check run
    with the build sees that build; run alone, it checks what the latest build claimed."""
    if not model.incremental:
        return None
    event = context.instance.get_latest_materialization_event(dg.AssetKey(model.name))
    built = (
        event.asset_materialization.metadata.get(DAYS_BUILT)
        if event and event.asset_materialization
        else None
    )
    if built is None:
        return None  # not built by this instance yet: every day it holds
    return [date.fromisoformat(d) for d in str(built.value).split(", ") if d]


def _not_built(model: Model) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=False, metadata={"reason": f"tracehouse.{model.name} does not exist yet: materialize it first"}
    )


def _model_checks(model: Model) -> list[dg.AssetChecksDefinition]:
    """The model's checks as definitions of their own: they ride along with every build (asset jobs,
    automation, backfills) and can be executed alone from the asset's Checks tab."""

    @dg.asset_check(asset=model.name, name="unique_not_null_keys", description="key parts set and unique")
    def keys(clickhouse: ClickHouseResource) -> dg.AssetCheckResult:
        with clickhouse.connect() as ch:
            if not table_exists(ch, model.name, DATABASE):
                return _not_built(model)
            violations = key_violations(ch, model)
        return dg.AssetCheckResult(
            passed=not any(violations.values()),
            metadata={**violations, "key": ", ".join(model.unique_key)},
        )

    @dg.asset_check(
        asset=model.name,
        name="reconciles_with_events",
        description="totals equal the same measures computed on events_core (daily models: on the days "
        "the latest build made — a nightly backfill of three days says nothing about today)",
    )
    def reconciles(
        context: dg.AssetCheckExecutionContext, clickhouse: ClickHouseResource
    ) -> dg.AssetCheckResult:
        days = _days_built(context, model)
        with clickhouse.connect() as ch:
            if not table_exists(ch, model.name, DATABASE):
                return _not_built(model)
            differences = reconcile(ch, model, days=days)
        return dg.AssetCheckResult(
            passed=not differences,
            severity=dg.AssetCheckSeverity.WARN,  # late data since the build also shows: re-run the day
            metadata={
                "differences": len(differences),
                "first_differences": str(differences[:5]),
                "days_checked": ", ".join(str(d) for d in days) if days is not None else "all",
            },
        )

    return [keys, reconciles]


MODELS = load_models()
MODEL_CHECKS = [check for m in MODELS.values() for check in _model_checks(m)]
INCREMENTAL = [dg.AssetKey(m.name) for m in MODELS.values() if m.incremental]


def model_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    """The model assets, whose daily partitions start at TRACEHOUSE_START_DATE and whose automation follows
    TRACEHOUSE_MODELS_CRON."""
    return [_model_asset(m, settings) for m in MODELS.values()]


def configured_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(assets=model_assets(settings))


automation_sensor = dg.AutomationConditionSensorDefinition(
    "analytics_automation",
    target=dg.AssetSelection.groups(GROUP),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps the analytics models following events: built once events exist, then after new "
    "data (or on TRACEHOUSE_MODELS_CRON after new data).",
)

recent_days_job = dg.define_asset_job(
    "rebuild_recent_days",
    selection=dg.AssetSelection.assets(*INCREMENTAL),
    description="Re-run daily partitions so late data lands in the days it belongs to.",
)


@dg.schedule(
    job=recent_days_job,
    cron_schedule="30 2 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Nightly scheduled backfill: rebuild the last 3 days of every incremental model.",
)
def nightly_recent_days(context: dg.ScheduleEvaluationContext):
    today = context.scheduled_execution_time.date()
    for back in range(3):
        day = (today - timedelta(days=back + 1)).isoformat()
        yield dg.RunRequest(run_key=f"{today}-{day}", partition_key=day)


@dg.op(
    pool="analytics_changed_days",
    description="Rebuild the days of every daily model that change_log says changed since its last run "
    "(late data for any day, not only the last three); each day rebuilt is recorded as a materialization "
    "of its partition.",
)
def refresh_changed_days_op(
    context: dg.OpExecutionContext, clickhouse: ClickHouseResource, settings: SettingsResource
):
    with clickhouse.connect() as ch:
        for model in (m for m in MODELS.values() if m.incremental):
            result = build(ch, model, truncate_chars=settings.core_truncate_chars)
            rows = rows_by_day(ch, model)
            days = result.partitions if not result.full else sorted(rows)
            context.log.info(f"{model.name}: {result.reason}, {len(days)} days, {result.rows} rows")
            yield from day_materializations(model, days, rows, result.reason, settings.start_date)
    yield dg.Output(None)


def day_materializations(
    model: Model, days: list[date], rows: dict[date, int], how: str, start_date: str
) -> Iterator[dg.AssetMaterialization]:
    """One materialization per day an op (not the model's asset) rebuilt, with the day's own rows (days
    outside the partitions, before ``start_date``, have none)."""
    built = ", ".join(d.isoformat() for d in days)
    partitions = daily_partitions(start_date)
    for day in days:
        if partitions.has_partition_key(day.isoformat()):
            yield dg.AssetMaterialization(
                asset_key=model.name,
                partition=day.isoformat(),
                metadata={
                    "build": how,
                    "dagster/table_name": f"tracehouse.{model.name}",
                    "dagster/row_count": rows.get(day, 0),  # the day's rows, not the table's
                    DAYS_BUILT: built,
                },
            )


@dg.job(description="Daily models follow late data: the days change_log lists since their last run.")
def refresh_changed_days():
    refresh_changed_days_op()


changed_days_schedule = dg.ScheduleDefinition(
    job=refresh_changed_days,
    cron_schedule="15 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly: rebuild the days of the daily models that late data changed.",
)

refresh_models_job = dg.define_asset_job(
    "refresh_models",
    selection=dg.AssetSelection.groups(GROUP) - dg.AssetSelection.assets(*INCREMENTAL),
    description="Bring the table and keyed models up to date (only the traces and sessions that changed); "
    "with refresh_changed_days, what `tracehouse run-once` runs after the propagation.",
)

replay_job = dg.define_asset_job(
    "replay_models",
    selection=dg.AssetSelection.groups(GROUP) - dg.AssetSelection.assets(*INCREMENTAL),
    config={
        "ops": {m.name: {"config": {"full": True}} for m in MODELS.values() if not m.incremental},
    },
    description="Rebuild the table and keyed models whole into shadow tables and swap them in (incremental "
    "models: backfill all partitions, which runs as one blue/green run). CLI: tracehouse replay MODEL.",
)
