"""The Dagster code location: every asset, check, job, sensor and schedule of tracehouse."""

from __future__ import annotations

import dagster as dg

from assets.events import EVENTS_CHECKS, propagation, replay_events_from_raw
from assets.migration import (
    all_parts_migrated,
    legacy_migration,
    legacy_snapshot,
    legacy_tables,
    migrate_legacy,
    snapshot_legacy,
)
from assets.models import (
    MODEL_ASSETS,
    MODEL_CHECKS,
    automation_sensor,
    changed_days_schedule,
    nightly_recent_days,
    recent_days_job,
    refresh_changed_days,
    refresh_models_job,
    replay_job,
)
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


propagate_events = dg.define_asset_job(
    "propagate_events",
    selection=dg.AssetSelection.assets(propagation) | dg.AssetSelection.checks(*EVENTS_CHECKS),
    description="Propagate the due windows of committed staging rows into events (and events_core); "
    "when a window ran, the events checks follow in the same run.",
)


def _every(seconds: int) -> str:
    """Cron for PROPAGATION_INTERVAL_SECONDS (cron has minute resolution: rounded, at least 1 minute)."""
    minutes = max(1, round(seconds / 60))
    return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"


propagation_schedule = dg.ScheduleDefinition(
    name="propagate_events_schedule",
    job=propagate_events,
    cron_schedule=_every(load_settings().propagation_interval_seconds),
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The micro-batch: windows that ended PROPAGATION_DELAY_SECONDS ago, every interval.",
)

check_events = dg.define_asset_job(
    "check_events",
    selection=dg.AssetSelection.checks(*EVENTS_CHECKS),
    description="Quality checks of events and events_core: duplicates, completeness, truncation, coverage.",
)

check_events_schedule = dg.ScheduleDefinition(
    name="check_events_hourly",
    job=check_events,
    cron_schedule="41 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)


defs = dg.Definitions(
    assets=[
        raw_batches,
        staging_tables,
        propagation,
        *MODEL_ASSETS,
        *legacy_tables,
        legacy_snapshot,
        legacy_migration,
    ],
    asset_checks=[*EVENTS_CHECKS, *MODEL_CHECKS, all_parts_migrated],
    jobs=[
        load_raw_batches,
        reconcile_raw_bucket,
        propagate_events,
        check_events,
        recent_days_job,
        refresh_changed_days,
        refresh_models_job,
        replay_job,
        snapshot_legacy,
        migrate_legacy,
        replay_events_from_raw,
    ],
    sensors=[raw_bucket_sensor, automation_sensor],
    schedules=[
        reconcile_schedule,
        propagation_schedule,
        check_events_schedule,
        nightly_recent_days,
        changed_days_schedule,
    ],
    resources=build_resources(),
    # Steps run in the run's process on both backends: embedded chDB allows one process per data folder, and
    # with a server a step is ClickHouse statements Python waits for, so parallelism comes from concurrent
    # runs (the pools), not from a process per step that imports this code location again (3.6 s of CPU
    # each, docs/operations.md).
    executor=dg.in_process_executor,
)
