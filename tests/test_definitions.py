"""The code location loads, and its staging assets run end to end with the real resources."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from orchestration.clickhouse import open_clickhouse, query_scalar
from orchestration.settings import load_settings
from tests.conftest import INGESTION_V2, OTLP_PB, SCORES_V5, minute_key, put

REPO = Path(__file__).resolve().parents[1]


def _defs() -> dg.Definitions:
    from orchestration.definitions import build_definitions

    return build_definitions()


def test_definitions_are_loadable(env):
    defs = _defs()
    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert {"load_raw_batches", "reconcile_raw_bucket"} <= {j.name for j in repo.get_all_jobs()}
    assert repo.get_sensor_def("raw_bucket_sensor").default_status == dg.DefaultSensorStatus.RUNNING


def test_staging_assets_materialize_with_real_resources(env, s3, migrated):
    from assets.staging import staging_tables
    from orchestration.resources import build_resources

    keys = [
        put(s3, env, minute_key("proj-1", "otlp", "a.binpb.gz"), OTLP_PB.read_bytes()),
        put(s3, env, minute_key("proj-1", "ingestion", "b.json"), INGESTION_V2.read_bytes()),
        put(s3, env, minute_key("proj-1", "ingestion", "broken.json"), b"{not json"),
    ]
    result = dg.materialize(
        [staging_tables],
        resources=build_resources(),
        run_config={"ops": {"staging_tables": {"config": {"keys": keys[:2], "scan_all": True}}}},
    )
    assert result.success
    by_key = {
        m.asset_key.path[-1]: m.metadata
        for m in result.get_asset_materialization_events()
        for m in [m.materialization]
    }
    assert by_key["observations_staging"]["rows_loaded"].value == 8
    assert by_key["observations_staging"]["dagster/table_name"].value == "tracehouse.observations_staging"
    assert by_key["ingest_quarantine"]["quarantined_this_run"].value == 1
    check = result.get_asset_check_evaluations()[0]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN

    def load(run_keys: list[str], scan_all: bool = False):
        return dg.materialize(
            [staging_tables],
            resources=build_resources(),
            run_config={"ops": {"staging_tables": {"config": {"keys": run_keys, "scan_all": scan_all}}}},
        )

    # a later clean load does not forget the object still quarantined ...
    later = load([put(s3, env, minute_key("proj-1", "ingestion", "c.json"), INGESTION_V2.read_bytes())])
    meta = later.get_asset_materialization_events()[-1].materialization.metadata
    assert meta["quarantined_this_run"].value == 0 and meta["quarantined_outstanding"].value == 1
    assert "broken.json" in meta["outstanding_objects"].value
    assert not later.get_asset_check_evaluations()[0].passed
    # ... until it is re-uploaded fixed under the same key (the reconcile scan sees the new ETag)
    put(s3, env, keys[2], INGESTION_V2.read_bytes())
    fixed = load([], scan_all=True)
    meta = fixed.get_asset_materialization_events()[-1].materialization.metadata
    assert meta["quarantined_outstanding"].value == 0 and fixed.get_asset_check_evaluations()[0].passed


@pytest.mark.parametrize(
    ("clickhouse_type", "shown"),
    [
        ("Map(String, UInt64)", "Map(String, UInt64)"),
        ("Array(LowCardinality(String))", "Array(LowCardinality(String))"),
        ("Nullable(Decimal(18, 12))", "decimal"),
        ("LowCardinality(Nullable(String))", "string"),
        ("DateTime64(3, 'UTC')", "timestamp"),
        ("Nullable(Float64)", "float"),
        ("UInt32", "int"),
        ("Date", "date"),
    ],
)
def test_column_schema_types_follow_clickhouse_types(clickhouse_type, shown):
    from assets.staging import column_type

    assert column_type(clickhouse_type) == shown


def test_run_once_loads_the_shared_fixtures_and_exits_zero(env, s3):
    put(s3, env, minute_key("proj-1", "otlp", "a.binpb.gz"), OTLP_PB.read_bytes())
    put(s3, env, minute_key("proj-1", "ingestion", "s.json"), SCORES_V5.read_bytes())
    put(s3, env, minute_key("proj-1", "ingestion", "b.json"), INGESTION_V2.read_bytes())
    cli = [str(Path(sys.executable).parent / "tracehouse"), "run-once"]
    done = subprocess.run(cli, cwd=REPO, env=os.environ, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "loaded=3 quarantined=0 observations=8 traces=2 scores=2" in done.stdout
    with open_clickhouse(None, env.chdb_path) as ch:
        assert query_scalar(ch, "SELECT count() FROM tracehouse.observations_staging") == 8
        assert query_scalar(ch, "SELECT count() FROM tracehouse.scores_staging") == 2
    # nothing was due yet (the propagation delay); now it is, and the derived tables follow the change
    done = subprocess.run(
        [*cli, "--no-delay"], cwd=REPO, env=os.environ, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr
    assert "model=trace_summaries rows=2 build='2 changed keys, 1 partitions'" in done.stdout
    # every stage was a run of the code location's jobs on the instance the UI reads
    with dg.DagsterInstance.from_config(str(load_settings().dagster_home)) as instance:
        jobs = [r.job_name for r in instance.get_runs() if r.status == dg.DagsterRunStatus.SUCCESS]
    stages = ["apply_schema", "reconcile_raw_bucket", "propagate_events", "refresh_changed_days"]
    assert sorted(jobs) == sorted(2 * [*stages, "refresh_models"])
    with open_clickhouse(None, env.chdb_path) as ch:
        assert query_scalar(ch, "SELECT count() FROM tracehouse.trace_summaries") == 2
        assert query_scalar(ch, "SELECT sum(scores) FROM tracehouse.scores_daily") == 2


def test_propagation_and_its_checks_run_in_dagster(env, s3, migrated):
    """The scheduled propagate_events job: with nothing due it records no materialization (the models'
    "deps updated" rule and the checks only follow new data); after a window, the events checks run in
    the same run, so they are evaluated against every materialization."""
    from assets.events import EVENTS_CHECKS, propagate_events, propagation
    from assets.staging import staging_tables
    from orchestration.resources import build_resources

    # the code location's job, with resources of this test's home (the module's were built at import)
    job = dg.Definitions(
        assets=[propagation], asset_checks=EVENTS_CHECKS, jobs=[propagate_events], resources=build_resources()
    ).resolve_job_def("propagate_events")
    instance = dg.DagsterInstance.ephemeral()
    config = {"ops": {"propagation": {"config": {"delay_seconds": 0}}}}
    idle = job.execute_in_process(run_config=config, instance=instance)
    assert idle.success
    assert not idle.get_asset_materialization_events() and not idle.get_asset_check_evaluations()

    keys = [put(s3, env, minute_key("proj-1", "ingestion", "b.json"), INGESTION_V2.read_bytes())]
    loaded = dg.materialize(
        [staging_tables],
        resources=build_resources(),
        run_config={"ops": {"staging_tables": {"config": {"keys": keys}}}},
    )
    assert loaded.success
    result = job.execute_in_process(run_config=config, instance=instance)
    assert result.success
    meta = {
        m.materialization.asset_key.path[-1]: m.materialization.metadata
        for m in result.get_asset_materialization_events()
    }
    assert meta["events"]["observations_propagated"].value == 3
    assert meta["events"]["dagster/row_count"].value == 3
    assert meta["events_core"]["dagster/row_count"].value == 3
    lineage = meta["events"]["dagster/column_lineage"].value
    assert dg.TableColumnDep(dg.AssetKey("traces_staging"), "user_id") in lineage.deps_by_column["user_id"]
    staging_usage = dg.TableColumnDep(dg.AssetKey("observations_staging"), "usage_details")
    assert staging_usage in lineage.deps_by_column["total_cost"]  # calculated from usage when not sent
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert set(checks) == {
        "events_no_duplicate_ids",
        "events_complete",
        "events_core_truncated",
        "trace_attributes_current",
        "events_instrumentation_health",
    }
    assert all(c.passed for c in checks.values()), {n: c.metadata for n, c in checks.items() if not c.passed}


def test_replay_events_from_raw_job_runs_in_dagster(env, s3, migrated):
    from assets.events import replay_events_from_raw
    from orchestration.resources import build_resources

    put(s3, env, minute_key("proj-1", "otlp", "a.binpb.gz"), OTLP_PB.read_bytes())
    put(s3, env, minute_key("proj-1", "ingestion", "b.json"), INGESTION_V2.read_bytes())
    result = replay_events_from_raw.execute_in_process(resources=build_resources())
    assert result.success
    materialized = {
        m.asset_key.path[-1]: m.metadata
        for m in result.asset_materializations_for_node("replay_events_from_raw_op")
    }
    assert materialized["events"]["dagster/row_count"].value == 6
    assert materialized["events_core"]["replayed_from_raw_objects"].value == 2
    # every table the replay swapped or rebuilt is a materialization (a daily model: per day it holds)
    from orchestration.models import load_models

    assert {"traces", "scores", *load_models()} <= set(materialized)
    assert materialized["trace_summaries"]["dagster/row_count"].value == 2
    with open_clickhouse(None, env.chdb_path) as ch:
        assert query_scalar(ch, "SELECT count() FROM tracehouse.trace_summaries") == 2  # models rebuilt too


def test_models_are_built_as_soon_as_events_exist_not_at_the_top_of_the_hour():
    from assets.models import MODELS, daily_partitions

    defs = _defs()
    instance = dg.DagsterInstance.ephemeral()
    analytics = dg.AssetSelection.groups("analytics")
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=analytics)
    assert first.total_requested == 0  # nothing to build from yet
    for upstream in ("events", "events_core", "traces", "scores"):
        instance.report_runless_asset_event(dg.AssetMaterialization(upstream))
    second = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=analytics, cursor=first.cursor
    )
    assert {r.key.path[-1] for r in second.results if not r.true_subset.is_empty} == set(MODELS)
    today = daily_partitions(load_settings().start_date).get_last_partition_key()
    for name, model in MODELS.items():
        partition = today if model.incremental else None
        instance.report_runless_asset_event(dg.AssetMaterialization(name, partition=partition))
    third = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=analytics, cursor=second.cursor
    )
    assert third.total_requested == 0  # built: nothing new
    instance.report_runless_asset_event(dg.AssetMaterialization("events_core"))  # a window wrote rows
    fourth = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=analytics, cursor=third.cursor
    )
    following = {r.key.path[-1] for r in fourth.results if not r.true_subset.is_empty}
    on_core = {n for n, m in MODELS.items() if "events_core" in m.sources}
    # within the tick, and the models built on them in the same tick
    assert following == on_core | {n for n, m in MODELS.items() if set(m.refs) & on_core}


def test_settings_shape_the_definitions_they_name_when_loaded_not_when_imported(monkeypatch):
    """A cron, a partitions start, a database name: read each time the code location is built (what
    Dagster's @dg.definitions and every command-line run do), so an environment changed after import is
    the one used. Without TRACEHOUSE_MODELS_CRON the models follow new data (eager); with it, its cron
    after new data (Dagster's on_cron, whose timing Dagster tests); a first build happens at once either
    way. The settings resource carries each value the environment set as its EnvVar."""
    import orchestration.definitions  # imported first: what follows must not depend on import order

    def loaded() -> dg.Definitions:
        return orchestration.definitions.defs()  # as Dagster loads it

    def conditions(defs: dg.Definitions) -> list[str]:
        spec = defs.resolve_assets_def("trace_summaries").specs_by_key[dg.AssetKey("trace_summaries")]
        return [c.get_label() for c in spec.automation_condition.children]

    plain = loaded()
    assert conditions(plain) == ["eager", "first_build"]
    assert plain.resolve_schedule_def("propagate_events_schedule").cron_schedule == "*/3 * * * *"
    for name, value in {
        "TRACEHOUSE_MODELS_CRON": "0 * * * *",
        "PROPAGATION_INTERVAL_SECONDS": "600",
        "TRACEHOUSE_START_DATE": "2025-06-01",
        "LEGACY_DATABASE": "v3_archive",
        "RAW_BUCKET": "elsewhere",
        "TRACEHOUSE_S3_READ_TIMEOUT_SECONDS": "7",
    }.items():
        monkeypatch.setenv(name, value)
    defs = loaded()
    assert conditions(defs) == ["on_cron(0 * * * *, UTC)", "first_build"]
    assert defs.resolve_schedule_def("propagate_events_schedule").cron_schedule == "*/10 * * * *"
    daily = defs.resolve_assets_def("usage_daily").partitions_def
    assert daily.get_first_partition_key() == "2025-06-01"
    legacy = defs.resolve_assets_def("legacy_observations").specs_by_key[dg.AssetKey("legacy_observations")]
    assert legacy.metadata["dagster/table_name"] == "v3_archive.observations"
    settings = defs.resources["settings"]
    assert settings.raw_bucket == dg.EnvVar("RAW_BUCKET")  # the name in the UI, resolved when a run starts
    assert settings.propagation_interval_seconds == dg.EnvVar.int("PROPAGATION_INTERVAL_SECONDS")
    assert settings.raw_prefix == ""  # not set: the default, as a value
    assert defs.resources["s3"].read_timeout_seconds == 7  # the raw bucket's client in every run


def test_importing_the_code_location_reads_no_environment_variable():
    """Every module of the code location imported with os.environ replaced by a mapping that records who
    reads it: no read may come from this repository's code (only Dagster's own, which we do not own)."""
    probe = f"""
import os, sys, traceback
repo = {str(REPO)!r}
reads = []
STDLIB_MAPPING = ("<frozen os>", "<frozen _collections_abc>")

class Watched(type(os.environ)):
    def __getitem__(self, key):
        frames = traceback.extract_stack()[:-1]
        caller = next(f for f in reversed(frames) if f.filename not in STDLIB_MAPPING)
        if caller.filename.startswith(repo) and "/.venv/" not in caller.filename:
            reads.append(f"{{key}} at {{caller.filename}}:{{caller.lineno}}")
        return super().__getitem__(key)

os.environ = Watched(os.environ._data, os.environ.encodekey, os.environ.decodekey,
                     os.environ.encodevalue, os.environ.decodevalue)
import orchestration.definitions as d
list(d._stage_modules())
import orchestration.cli
print(reads)
"""
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
