"""Stage 2: the micro-batch propagation into ``events`` and, through its materialized view, ``events_core``.

The asset runs every ``PROPAGATION_INTERVAL_SECONDS`` (the schedule of ``configured_definitions`` below) and
processes the windows that are due; the logic lives in ``orchestration/propagation.py``. The checks below
are cheap enough to run hourly on their own job, and each fails on the broken data it names.
"""

from datetime import timedelta

import dagster as dg
from pydantic import Field

from assets.staging import lineage_metadata, table_metadata
from orchestration.clickhouse import ClickHouse, query_scalar
from orchestration.faults import run_failures
from orchestration.health import BARE_SHARE, MIN_SPANS, bare_scopes, health_table, instrumentation_health
from orchestration.propagation import (
    events_lineage,
    propagate,
    server_now,
    trace_attribute_coverage,
    watermark,
)
from orchestration.resources import ClickHouseResource, RawBucketS3, SettingsResource
from orchestration.schema import view_lineage
from orchestration.settings import DATABASE, Settings

EVENTS = dg.AssetKey("events")
EVENTS_CORE = dg.AssetKey("events_core")
OBSERVATIONS_STAGING = dg.AssetKey("observations_staging")
SCORES = dg.AssetKey("scores")
TRACES = dg.AssetKey("traces")
SCORES_STAGING = dg.AssetKey("scores_staging")
TRACES_STAGING = dg.AssetKey("traces_staging")
CHECK_DAYS = 30  # checks that scan events look at rows that started in the last CHECK_DAYS days


class PropagationConfig(dg.Config):
    delay_seconds: int | None = Field(
        default=None, description="override PROPAGATION_DELAY_SECONDS (0 = propagate everything committed)"
    )
    max_windows: int = Field(default=20, description="non-empty windows per run; the rest wait for the next")
    retry: bool = Field(default=True, description="retry faults (ClickHouse away); the CLI fails at once")


@dg.multi_asset(
    name="propagation",
    specs=[
        dg.AssetSpec(
            EVENTS,
            skippable=True,
            deps=[OBSERVATIONS_STAGING, TRACES_STAGING, dg.AssetKey("legacy_migration")],
            group_name="events",
            kinds={"clickhouse"},
            description="One immutable row per observation with its trace's attributes; no joins or dedup "
            "at read time. Appended every few minutes from committed staging rows.",
        ),
        dg.AssetSpec(
            EVENTS_CORE,
            skippable=True,
            deps=[EVENTS],
            group_name="events",
            kinds={"clickhouse"},
            description="events with input/output/metadata truncated (flags say so), written by a "
            "materialized view in the same insert. Dashboards and list views read this table.",
        ),
        dg.AssetSpec(
            TRACES,
            skippable=True,
            deps=[TRACES_STAGING, OBSERVATIONS_STAGING],
            group_name="events",
            kinds={"clickhouse"},
            description="The latest value of every trace attribute per trace — name, user, session, tags, "
            "release, version, environment, metadata, public, bookmarked, input, output — for every trace, "
            "with observations or not (view traces_current over trace_attributes_ranked).",
        ),
        dg.AssetSpec(
            SCORES,
            skippable=True,
            deps=[SCORES_STAGING],
            group_name="events",
            kinds={"clickhouse"},
            description="One current row per score id (numeric, boolean, categorical; linked to its trace, "
            "observation or session), the latest version whole; durable, unlike staging. Read "
            "scores_current.",
        ),
    ],
    pool="propagation",
    retry_policy=dg.RetryPolicy(max_retries=2, delay=15, backoff=dg.Backoff.EXPONENTIAL),
)
def propagation(
    context: dg.AssetExecutionContext,
    config: PropagationConfig,
    clickhouse: ClickHouseResource,
    settings: SettingsResource,
):
    delay = settings.propagation_delay_seconds if config.delay_seconds is None else config.delay_seconds
    with clickhouse.connect() as ch:
        with run_failures(retry=config.retry):
            report = propagate(
                ch,
                delay_seconds=delay,
                interval_seconds=settings.propagation_interval_seconds,
                max_windows=config.max_windows,
                run_id=context.run.run_id,
                user_prices=settings.user_prices_path,
                on_window=lambda w: context.log.info(
                    f"window {w.start:%H:%M:%S.%f}–{w.end:%H:%M:%S.%f}: {w.observations} observations, "
                    f"{w.repaired} repaired, {w.replaced} superseded rows removed, {w.scores} scores"
                ),
            )
        if not report.caught_up:
            context.log.warning(f"{config.max_windows} windows done, more are due: the next run continues")
        lag = None
        if report.watermark is not None:
            lag = (server_now(ch) - report.watermark).total_seconds()
        if not report.windows:
            # nothing was due: no materialization, so the models' "deps updated" rules and the events
            # checks (which run after this step in the same job) only follow real new data
            context.log.info(f"no window due; watermark lag {lag} s")
            return
        run_metadata = {
            "windows": len(report.windows),
            "observations_propagated": report.observations,
            "rows_repaired": report.repaired,
            "superseded_rows_removed": report.replaced,
            "scores_propagated": report.scores,
            "watermark": report.watermark.isoformat() if report.watermark else "none",
            "watermark_lag_seconds": lag,
            "caught_up": report.caught_up,
        }
        yield dg.MaterializeResult(
            asset_key=EVENTS,
            metadata={
                **table_metadata(ch, "events"),
                **run_metadata,
                **lineage_metadata(events_lineage()),
                "instrumentation_health": dg.MetadataValue.md(health_table(instrumentation_health(ch))),
            },
        )
        yield dg.MaterializeResult(
            asset_key=EVENTS_CORE,
            metadata={
                **table_metadata(ch, "events_core"),
                "truncated_to_chars": settings.core_truncate_chars,
                **lineage_metadata(view_lineage("events_core_mv")),
            },
        )
        yield dg.MaterializeResult(
            asset_key=TRACES, metadata=table_metadata(ch, "traces_current", count=False)
        )
        yield dg.MaterializeResult(
            asset_key=SCORES, metadata={**table_metadata(ch, "scores"), "scores_propagated": report.scores}
        )


# --- checks: small functions (tests call them on broken data) wrapped as asset checks ---------------


def duplicate_rows(ch: ClickHouse, table: str, db: str = DATABASE, visible: bool = True) -> int:
    """Rows beyond one per observation in ``table`` (started in the last CHECK_DAYS days), as readers see
    it (``<table>_current``), or as stored (``visible=False``: in the middle of a window, superseded rows
    are still stored until the window's delete)."""
    source = f"{table}_current" if visible else table
    return query_scalar(
        ch,
        f"SELECT count() - uniqExact(project_id, id) FROM {db}.{source} "  # noqa: S608
        f"WHERE start_time >= now64(6) - INTERVAL {CHECK_DAYS} DAY",
    )


def missing_from_events(ch: ClickHouse, db: str = DATABASE) -> int:
    """Observations committed in staging before the watermark that have no row in events."""
    mark = watermark(ch, db)
    if mark is None:
        return 0
    return query_scalar(
        ch,
        f"SELECT count() FROM (SELECT DISTINCT project_id, id FROM {db}.observations_staging "  # noqa: S608
        f"WHERE (source_key, load_id) IN (SELECT source_key, load_id FROM {db}.ingest_ledger "
        "WHERE status = 'loaded' AND recorded_at < {mark:DateTime64(6, 'UTC')})) AS s "
        f"WHERE (project_id, id) NOT IN (SELECT project_id, id FROM {db}.events)",
        {"mark": mark},
    )


def truncation_violations(ch: ClickHouse, limit: int, db: str = DATABASE) -> int:
    """events_core rows longer than the bound, or flagged wrongly, or not matching events row for row."""
    over = query_scalar(
        ch,
        f"SELECT countIf(lengthUTF8(input) > {{n:UInt32}} OR lengthUTF8(output) > {{n:UInt32}} "  # noqa: S608
        "OR arrayExists(v -> lengthUTF8(v) > {n:UInt32}, mapValues(metadata))) "
        f"FROM {db}.events_core",
        {"n": limit},
    )
    mismatched = query_scalar(
        ch,
        f"SELECT count() FROM {db}.events AS e "  # noqa: S608
        f"LEFT ANTI JOIN {db}.events_core AS c "
        "ON e.project_id = c.project_id AND e.id = c.id AND e.propagation_id = c.propagation_id",
    )
    flags = query_scalar(
        ch,
        f"SELECT count() FROM {db}.events AS e INNER JOIN {db}.events_core AS c "  # noqa: S608
        "ON e.project_id = c.project_id AND e.id = c.id AND e.propagation_id = c.propagation_id "
        "WHERE c.input_truncated != (lengthUTF8(e.input) > {n:UInt32}) "
        "OR c.output_truncated != (lengthUTF8(e.output) > {n:UInt32}) "
        "OR (NOT c.input_truncated AND c.input != e.input)",
        {"n": limit},
    )
    extra = query_scalar(ch, f"SELECT count() FROM {db}.events_core") - query_scalar(  # noqa: S608
        ch,
        f"SELECT count() FROM {db}.events",  # noqa: S608
    )
    return over + mismatched + flags + abs(extra)


@dg.asset_check(asset=EVENTS, description="Each observation has exactly one row (last 30 days).")
def events_no_duplicate_ids(clickhouse: ClickHouseResource) -> dg.AssetCheckResult:
    with clickhouse.connect() as ch:
        extra = {t: duplicate_rows(ch, t) for t in ("events", "events_core")}
    return dg.AssetCheckResult(
        passed=not any(extra.values()), metadata={f"{t}_extra_rows": n for t, n in extra.items()}
    )


@dg.asset_check(
    asset=EVENTS, description="Every observation committed in staging before the watermark is in events."
)
def events_complete(clickhouse: ClickHouseResource, settings: SettingsResource) -> dg.AssetCheckResult:
    with clickhouse.connect() as ch:
        missing = missing_from_events(ch)
        mark = watermark(ch)
        behind = (server_now(ch) - mark).total_seconds() if mark else None
    due = settings.propagation_delay_seconds + 3 * settings.propagation_interval_seconds
    return dg.AssetCheckResult(
        passed=missing == 0 and (behind is None or behind <= due),
        metadata={
            "missing_observations": missing,
            "watermark_lag_seconds": behind,
            "allowed_lag_seconds": due,
        },
    )


@dg.asset_check(asset=EVENTS_CORE, description="Truncation bound respected; same rows as events.")
def events_core_truncated(clickhouse: ClickHouseResource, settings: SettingsResource) -> dg.AssetCheckResult:
    limit = settings.core_truncate_chars
    with clickhouse.connect() as ch:
        violations = truncation_violations(ch, limit)
    return dg.AssetCheckResult(
        passed=violations == 0, metadata={"violations": violations, "bound_chars": limit}
    )


@dg.asset_check(
    asset=EVENTS, description="Share of rows whose trace attributes are the latest known (target 100%)."
)
def trace_attributes_current(clickhouse: ClickHouseResource) -> dg.AssetCheckResult:
    with clickhouse.connect() as ch:
        rows, current = trace_attribute_coverage(ch, server_now(ch) - timedelta(days=CHECK_DAYS))
    coverage = current / rows if rows else 1.0
    return dg.AssetCheckResult(
        passed=current == rows,
        metadata={"rows": rows, "current_rows": current, "coverage": dg.MetadataValue.float(coverage)},
    )


@dg.asset_check(
    asset=EVENTS,
    description=f"Warns about instrumentation scopes whose spans (at least {MIN_SPANS} in the last day) are "
    f"{BARE_SHARE:.0%} or more bare: type SPAN, no model, no input or output (a convention tracehouse does "
    "not read, or content capture off).",
)
def events_instrumentation_health(clickhouse: ClickHouseResource) -> dg.AssetCheckResult:
    with clickhouse.connect() as ch:
        health = instrumentation_health(ch)
    bare = bare_scopes(health)
    return dg.AssetCheckResult(
        passed=not bare,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "bare_scopes": dg.MetadataValue.md(health_table(bare) if bare else "none"),
            "scopes": len(health),
            "health": dg.MetadataValue.md(health_table(health)),
        },
    )


EVENTS_CHECKS = [
    events_no_duplicate_ids,
    events_complete,
    events_core_truncated,
    trace_attributes_current,
    events_instrumentation_health,
]


@dg.op(
    pool="propagation",  # never concurrent with a propagation window: the swap must not interleave with one
    description="Rebuild events/events_core from the whole raw bucket in a shadow database and swap them in "
    "(staging-level logic changed), then rebuild the derived tables.",
)
def replay_events_from_raw_op(
    context: dg.OpExecutionContext,
    clickhouse: ClickHouseResource,
    s3: RawBucketS3,
    settings: SettingsResource,
):
    from assets.models import day_materializations
    from orchestration.models import load_models, rows_by_day
    from orchestration.refresh import build
    from orchestration.replay import replay_from_raw

    with clickhouse.connect() as ch:
        result = replay_from_raw(ch, s3.get_client(), settings)
        swapped = (
            (EVENTS, "events"),
            (EVENTS_CORE, "events_core"),
            (TRACES, "traces_current"),
            (SCORES, "scores"),
        )
        for key, table in swapped:
            yield dg.AssetMaterialization(
                asset_key=key,
                metadata={
                    **table_metadata(ch, table),
                    "replayed_from_raw_objects": result.objects,
                    "live_observations_merged_again": result.caught_up,
                },
            )
        for model in load_models().values():  # every table replayed is a materialization the UI shows
            rows = build(ch, model, full=True, truncate_chars=settings.core_truncate_chars).rows
            if model.incremental:
                by_day = rows_by_day(ch, model)
                yield from day_materializations(
                    model, sorted(by_day), by_day, "whole (replay)", settings.start_date
                )
                continue
            yield dg.AssetMaterialization(
                asset_key=model.name,
                metadata={
                    **table_metadata(ch, model.name, descriptions=model.columns),
                    "rows_built": rows,
                    "build": "whole (replay)",
                },
            )
    context.log.info(
        f"replayed {result.objects} raw objects; {result.caught_up} live observations merged again"
    )
    yield dg.Output(None)


@dg.job(description="Blue/green replay of events from the raw bucket (CLI: tracehouse replay events).")
def replay_events_from_raw():
    replay_events_from_raw_op()


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


def configured_definitions(settings: Settings) -> dg.Definitions:
    """The propagation schedule, whose cron is the configured interval."""
    schedule = dg.ScheduleDefinition(
        name="propagate_events_schedule",
        job=propagate_events,
        cron_schedule=_every(settings.propagation_interval_seconds),
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="The micro-batch: windows that ended PROPAGATION_DELAY_SECONDS ago, every interval.",
    )
    return dg.Definitions(schedules=[schedule])


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
