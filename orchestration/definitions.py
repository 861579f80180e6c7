"""The Dagster code location: every asset, check, job, sensor and schedule of tracehouse."""

from __future__ import annotations

import dagster as dg

from assets.raw import raw_batches
from assets.staging import StagingLoadConfig, staging_tables
from orchestration.resources import build_resources
from orchestration.settings import load_settings
from sensors.raw_bucket import LOAD_JOB_NAME, STAGING_OP_NAME, raw_bucket_sensor

load_raw_batches = dg.define_asset_job(
    LOAD_JOB_NAME,
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


def _executor() -> dg.ExecutorDefinition:
    # Embedded chDB allows one process per data folder: steps of a run share the run's process.
    return dg.in_process_executor if load_settings().embedded else dg.multiprocess_executor


defs = dg.Definitions(
    assets=[raw_batches, staging_tables],
    jobs=[load_raw_batches, reconcile_raw_bucket],
    sensors=[raw_bucket_sensor],
    schedules=[reconcile_schedule],
    resources=build_resources(),
    executor=_executor(),
)
