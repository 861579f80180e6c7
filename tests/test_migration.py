"""Historic migration on real chDB: legacy tables with duplicates → events, compared with FINAL; kill and
resume; re-run a part; overlap with live ingestion; the Dagster partitions and the CLI."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import orjson
import pytest

from orchestration.clickhouse import open_clickhouse, query_rows, query_scalar
from orchestration.legacy import generate_legacy
from orchestration.loader import load_objects
from orchestration.migration import done_parts, migrate_part, parts, prepare
from orchestration.propagation import propagate
from orchestration.schema import apply_migrations
from orchestration.settings import load_settings
from tests.conftest import BOTH_BACKENDS, minute_key, put

DB = "tracehouse"
REPO = Path(__file__).resolve().parents[1]
# the independent computation: ReplacingMergeTree FINAL (drops is_deleted rows) and a join to traces FINAL
EXPECTED = """
SELECT o.project_id AS project_id, o.id AS id, o.trace_id AS trace_id, o.type AS type, o.name AS name,
       ifNull(o.output, '') AS output, CAST(o.total_cost AS Nullable(Decimal(18, 12))) AS total_cost,
       CAST(o.end_time, 'Nullable(DateTime64(6, \\'UTC\\'))') AS end_time,
       ifNull(t.user_id, '') AS user_id, ifNull(t.session_id, '') AS session_id, t.tags AS tags,
       t.name AS trace_name
FROM legacy.observations AS o FINAL
LEFT JOIN (SELECT * FROM legacy.traces FINAL) AS t ON o.project_id = t.project_id AND o.trace_id = t.id
"""
ACTUAL = (
    "SELECT project_id, id, trace_id, type, name, output, total_cost, end_time, user_id, session_id, tags, "
    "trace_name FROM tracehouse.events"
)


def _rows(ch, sql) -> dict[str, dict]:
    return {r["id"]: r for r in query_rows(ch, sql)}


def _migrate_all(ch, rows_per_part=4000) -> list:
    return [migrate_part(ch, p.name) for p in prepare(ch, rows_per_part=rows_per_part)]


@BOTH_BACKENDS
def test_migrated_events_equal_the_final_based_computation(ch):
    generate_legacy(ch, 20_000, per_trace=5)
    assert query_scalar(ch, "SELECT count() FROM legacy.observations") > 20_000  # versions and duplicates
    results = _migrate_all(ch)
    assert len(results) >= 5 and all(r.verified for r in results)
    expected, actual = _rows(ch, EXPECTED), _rows(ch, ACTUAL)
    assert len(actual) == query_scalar(ch, f"SELECT count() FROM {DB}.events")  # one row per observation
    assert actual == expected
    assert sum(r["user_id"] != "" for r in actual.values()) == len(actual)  # the later trace version won
    assert query_scalar(ch, f"SELECT count() FROM {DB}.events_core") == len(actual)


def test_legacy_scores_are_migrated_with_their_versions_and_deletions(ch):
    generate_legacy(ch, 4_000, per_trace=5)
    # later versions of some scores, a categorical one, and deletions, as V3 writes them (new rows)
    ch.command(
        "INSERT INTO legacy.scores SELECT id, project_id, trace_id, observation_id, name, value + 5, "
        "if(cityHash64(id) % 3 = 0, 'relabelled', NULL), source, 'v2', timestamp, event_ts + 1, "
        "cityHash64(id) % 7 = 0 FROM legacy.scores WHERE cityHash64(id) % 2 = 0"
    )
    results = _migrate_all(ch, rows_per_part=2000)
    assert all(r.verified for r in results) and sum(r.scores for r in results) > 0
    expected = query_rows(
        ch,
        "SELECT project_id, id, trace_id, name, if(string_value IS NULL, value, NULL) AS value, "
        "ifNull(string_value, '') AS string_value, ifNull(comment, '') AS comment "
        "FROM legacy.scores FINAL ORDER BY project_id, id",  # FINAL drops the is_deleted rows
    )
    actual = query_rows(
        ch,
        f"SELECT project_id, id, trace_id, name, value, string_value, comment FROM {DB}.scores_current "
        "ORDER BY project_id, id",
    )
    assert actual == expected
    assert query_scalar(ch, "SELECT countIf(is_deleted) FROM legacy.scores") > 0  # deletions were applied
    assert query_scalar(ch, f"SELECT count() - uniqExact(project_id, id) FROM {DB}.scores") == 0


@BOTH_BACKENDS
def test_rerunning_a_part_replaces_its_rows(ch):
    generate_legacy(ch, 5_000, per_trace=5)
    first = _migrate_all(ch, rows_per_part=2000)
    again = migrate_part(ch, first[0].part)
    assert again.verified and again.superseded == first[0].observations
    assert _rows(ch, ACTUAL) == _rows(ch, EXPECTED)
    assert done_parts(ch) == {r.part for r in first}


_KILL = textwrap.dedent(
    """
    import os, sys
    from orchestration import migration
    from orchestration.clickhouse import open_clickhouse
    from orchestration.settings import load_settings

    def die(*_args, **_kwargs):
        os._exit(9)

    migration.publish_rows = die  # rows of the part are in events; cleanup and verification never ran
    with open_clickhouse(None, load_settings().chdb_path) as ch:
        migration.migrate_part(ch, sys.argv[1])
    """
)


def test_killed_part_is_resumed_exactly_once(env):
    with open_clickhouse(None, env.chdb_path) as ch:
        apply_migrations(ch)
        generate_legacy(ch, 6_000, per_trace=5)
        found = prepare(ch, rows_per_part=2000)
        migrate_part(ch, found[0].name)  # a part done before the crash, to prove it is not redone
        assert migrate_part(ch, found[0].name).verified
        migrate_part(ch, found[1].name)
    # a verified part re-run from scratch in a process that is killed mid-part
    child = subprocess.run(
        [sys.executable, "-c", _KILL, found[1].name],
        cwd=REPO,
        env=os.environ,
        capture_output=True,
        timeout=180,
    )
    assert child.returncode == 9, child.stderr.decode()[-2000:]
    with open_clickhouse(None, env.chdb_path) as ch:
        assert query_scalar(ch, f"SELECT count() - uniqExact(id) FROM {DB}.events") > 0  # half done, for real
        readers_see = query_scalar(ch, f"SELECT count() - uniqExact(id) FROM {DB}.events_current")
        assert readers_see == 0  # but not to readers
    cli = [str(Path(sys.executable).parent / "tracehouse"), "migrate", "--rows-per-part", "2000", "--redo"]
    done = subprocess.run(cli, cwd=REPO, env=os.environ, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert f"parts={len(found)} migrated={len(found)}" in done.stdout and "failed=0" in done.stdout
    resumed = subprocess.run(cli[:-1], cwd=REPO, env=os.environ, capture_output=True, text=True, timeout=240)
    assert f"parts={len(found)} migrated=0" in resumed.stdout  # everything verified: nothing redone
    # the command ran Dagster: its runs, partitions and checks are in the instance the UI reads
    with dg.DagsterInstance.from_config(str(load_settings().dagster_home)) as instance:
        runs = instance.get_runs(dg.RunsFilter(job_name="migrate_legacy"))
        assert len(runs) == len(found) and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        assert len(instance.get_runs(dg.RunsFilter(job_name="snapshot_legacy"))) == 2
        migrated = instance.get_materialized_partitions(dg.AssetKey("legacy_migration"))
        assert migrated == set(instance.get_dynamic_partitions("legacy_parts"))
        assert len(migrated) == len(found)
    with open_clickhouse(None, env.chdb_path) as ch:
        assert _rows(ch, ACTUAL) == _rows(ch, EXPECTED)


@pytest.mark.parametrize("live_first", [True, False])
def test_live_ingestion_overlapping_the_migration_is_not_duplicated(env, s3, ch, live_first):
    generate_legacy(ch, 3_000, per_trace=5, projects=1)
    legacy = query_rows(
        ch, "SELECT id, trace_id, start_time FROM legacy.observations FINAL ORDER BY id LIMIT 3"
    )
    batch = {
        "batch": [
            {
                "id": f"ev-{i}",
                "type": "span-create",
                "timestamp": r["start_time"].isoformat().replace("+00:00", "Z"),
                "body": {
                    "id": r["id"],
                    "traceId": r["trace_id"],
                    "name": "live",
                    "startTime": r["start_time"].isoformat().replace("+00:00", "Z"),
                    "output": "from the live path",
                },
            }
            for i, r in enumerate(legacy)
        ]
    }
    key = put(s3, env, minute_key("legacy-0", "ingestion", "live.json"), orjson.dumps(batch))

    def live() -> None:
        assert load_objects(ch, s3, [key], env, run_id="t").count("loaded") == 1
        propagate(ch, delay_seconds=0, interval_seconds=180)

    if live_first:
        live()
        _migrate_all(ch, rows_per_part=1000)
    else:
        _migrate_all(ch, rows_per_part=1000)
        live()
    actual = _rows(ch, ACTUAL)
    assert query_scalar(ch, f"SELECT count() FROM {DB}.events") == len(actual) == len(_rows(ch, EXPECTED))
    for r in legacy:
        assert actual[r["id"]]["output"] == "from the live path"  # the newer, live row is the one kept
        assert actual[r["id"]]["user_id"] != ""  # with the legacy trace's attributes joined on
    assert query_scalar(ch, f"SELECT count() - uniqExact(id) FROM {DB}.events_core") == 0


def test_snapshot_and_part_partitions_in_dagster(env, ch):
    from assets.migration import LEGACY_PARTS, all_parts_migrated, legacy_migration, legacy_snapshot
    from orchestration.resources import build_resources

    generate_legacy(ch, 4_000, per_trace=5)
    resources = build_resources()
    with dg.instance_for_test() as instance:

        def completeness() -> dg.AssetCheckEvaluation:
            run = dg.materialize(
                [legacy_migration, all_parts_migrated],
                instance=instance,
                resources=resources,
                selection=dg.AssetSelection.checks(all_parts_migrated),
            )
            return run.get_asset_check_evaluations()[0]

        before = completeness()  # Dagster draws 0 of 0 partitions green; the check does not
        assert not before.passed and "no snapshot yet" in before.metadata["state"].value
        # a partition named the old way (a part name) by an earlier version: replaced, not kept beside
        instance.add_dynamic_partitions(LEGACY_PARTS.name, ["0_1_1_1"])
        snap = dg.materialize(
            [legacy_snapshot],
            instance=instance,
            resources=resources,
            run_config={"ops": {"legacy_snapshot": {"config": {"rows_per_part": 1500}}}},
        )
        assert snap.success
        snap_meta = snap.get_asset_materialization_events()[0].materialization.metadata
        assert snap_meta["dagster/table_name"].value == "tracehouse.migration_observations"
        undescribed = [c.name for c in snap_meta["dagster/column_schema"].value.columns if not c.description]
        assert not undescribed, f"columns without a description: {undescribed}"
        assert "dagster/column_schema" in snap_meta
        names = instance.get_dynamic_partitions(LEGACY_PARTS.name)
        # readable names: the part's hash bucket, one partition per part
        assert sorted(names) == sorted(f"bucket-{p.bucket.zfill(3)}" for p in parts(ch)) and len(names) >= 2
        for name in names:
            result = dg.materialize(
                [legacy_migration], instance=instance, resources=resources, partition_key=name
            )
            assert result.success
            meta = result.get_asset_materialization_events()[0].materialization.metadata
            assert meta["missing"].value == 0 and meta["duplicates"].value == 0
            assert meta["part"].value in {p.name for p in parts(ch)}
            assert (
                meta["dagster/table_name"].value == "tracehouse.events" and meta["scores_missing"].value == 0
            )
            if name == names[0]:
                halfway = completeness()
                assert not halfway.passed and halfway.metadata["parts_outstanding"].value == len(names) - 1
        done = completeness()
        assert done.passed and done.metadata["parts_migrated"].value == len(names)
    assert _rows(ch, ACTUAL) == _rows(ch, EXPECTED)


def test_a_failed_run_of_the_command_line_says_why(env, migrated):
    from orchestration.dagster_runs import failure, run_job

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("legacy_parts", ["bucket-999"])
        run = run_job("migrate_legacy", instance, partition_key="bucket-999")
        assert not run.success
        why = failure(run)
        assert "bucket-999 is not a part of the current snapshot" in why.reason
        assert "Failure" in why.details  # the error and its traceback, for the log file


def test_a_bug_in_a_run_reads_as_its_own_exception_not_dagsters_wrapper():
    from orchestration.dagster_runs import failure

    @dg.op
    def broken() -> None:
        raise ValueError("boom\nsecond line")

    @dg.job
    def job() -> None:
        broken()

    why = failure(job.execute_in_process(raise_on_error=False))
    assert why.reason == "unexpected ValueError: boom" and "Traceback" not in why.reason
    assert "ValueError" in why.details and "second line" in why.details
    assert why.metadata["fault_code"] == 70  # the exit code of a bug (orchestration/faults.py)
