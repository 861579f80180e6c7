"""The dbt_like_sql models on real chDB: lineage, numbers against an independent computation, per-day
idempotency, blue/green replay, checks on tampered data, and the Dagster assets."""

import os
import shutil
import subprocess
import sys
import threading
from collections import defaultdict
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from orchestration.clickhouse import query_rows, query_scalar
from orchestration.generate import generate
from orchestration.loader import load_objects
from orchestration.models import (
    MODELS_DIR,
    build_day,
    column_lineage,
    days_in_events,
    key_violations,
    load_models,
    rebuild,
    reconcile,
)
from orchestration.propagation import propagate
from orchestration.settings import load_settings
from tests.conftest import BOTH_BACKENDS, INGESTION_V2, OTLP_PB, minute_key, put

DB = "tracehouse"
REPO = Path(__file__).resolve().parents[1]
# float sums depend on the order rows are added: compare costs at 1e-9
USAGE_ROWS = f"SELECT * REPLACE (round(total_cost, 9) AS total_cost) FROM {DB}.usage_daily ORDER BY ALL"


@pytest.fixture
def filled(env, s3, ch):
    """Fixtures plus generated batches of every format (several projects, late updates), propagated."""
    keys = [
        put(s3, env, minute_key("p1", "otlp", "a.binpb.gz"), OTLP_PB.read_bytes()),
        put(s3, env, minute_key("p1", "ingestion", "b.json"), INGESTION_V2.read_bytes()),
    ]
    keys += generate(s3, env.raw_bucket, "", objects=8, traces_per_object=6, seed=3).keys
    report = load_objects(ch, s3, keys, env, run_id="t")
    assert report.count("quarantined") == 0
    propagate(ch, delay_seconds=0, interval_seconds=180)
    return ch


def _events(ch) -> list[dict]:
    return query_rows(ch, f"SELECT * FROM {DB}.events_core")


def test_column_lineage_is_derived_from_the_sql():
    models = load_models()
    usage = column_lineage(models["usage_daily"], models)
    assert usage["total_cost"] == [("events_core", "cost_details"), ("events_core", "total_cost")]
    assert usage["input_tokens"] == [("events_core", "usage_details")]
    assert usage["day"] == [("events_core", "start_time")]
    assert usage["observations"] == [("events_core", "id")]  # count(): the rows, shown as their key
    traces = column_lineage(models["trace_summaries"], models)
    assert traces["name"] == [("traces", "name")]
    assert ("traces", "input") in traces["input"] and ("events_core", "input") in traces["input"]
    # events_core.id: whether the trace has observations at all (a count())
    assert traces["latency_ms"] == [
        ("events_core", "end_time"), ("events_core", "id"), ("events_core", "start_time"),
        ("traces", "first_start"), ("traces", "last_start"),
    ]  # fmt: skip
    sessions = column_lineage(models["session_summaries"], models)
    assert sessions["users"] == [("trace_summaries", "user_id")]
    assert models["session_summaries"].refs == ("trace_summaries",)
    assert list(models).index("trace_summaries") < list(models).index("session_summaries")


@BOTH_BACKENDS
def test_usage_daily_matches_an_independent_computation(filled):
    ch = filled
    model = load_models()["usage_daily"]
    for day in days_in_events(ch):
        build_day(ch, model, day)
    expected: dict[tuple, dict] = defaultdict(lambda: defaultdict(float))
    traces: dict[tuple, set] = defaultdict(set)
    for e in _events(ch):
        key = (e["project_id"], e["start_time"].date(), e["provided_model_name"])
        usage = dict(e["usage_details"])
        row = expected[key]
        row["observations"] += 1
        row["generations"] += e["type"] == "GENERATION"
        row["input_tokens"] += usage.get("input", 0)
        row["output_tokens"] += usage.get("output", 0)
        row["total_tokens"] += usage.get("total", usage.get("input", 0) + usage.get("output", 0))
        cost = e["total_cost"] if e["total_cost"] is not None else sum(dict(e["cost_details"]).values())
        row["total_cost"] += float(cost)  # Decimal(18, 12) in events
        traces[key].add(e["trace_id"])
    got = {
        (r["project_id"], r["day"], r["model"]): r for r in query_rows(ch, f"SELECT * FROM {DB}.usage_daily")
    }
    assert set(got) == set(expected)
    for key, want in expected.items():
        assert got[key]["traces"] == len(traces[key])
        for column, value in want.items():
            assert float(got[key][column]) == pytest.approx(value), (key, column)
    assert key_violations(ch, model) == {"empty_keys": 0, "duplicate_keys": 0}
    assert reconcile(ch, model) == []


def test_trace_and_session_summaries_match(filled):
    ch = filled
    models = load_models()
    rebuild(ch, models["trace_summaries"])
    rebuild(ch, models["session_summaries"])
    by_trace: dict[tuple, list] = defaultdict(list)
    for e in _events(ch):
        by_trace[(e["project_id"], e["trace_id"])].append(e)
    rows = {
        (r["project_id"], r["trace_id"]): r for r in query_rows(ch, f"SELECT * FROM {DB}.trace_summaries")
    }
    assert set(rows) == set(by_trace)
    for key, obs in by_trace.items():
        r = rows[key]
        start = min(o["start_time"] for o in obs)
        end = max(o["end_time"] or o["start_time"] for o in obs)
        assert r["observations"] == len(obs) and r["start_time"] == start and r["end_time"] == end
        assert r["latency_ms"] == int((end - start).total_seconds() * 1000)
        assert r["generations"] == sum(o["type"] == "GENERATION" for o in obs)
        assert r["errors"] == sum(o["level"] == "ERROR" for o in obs)
        assert r["total_cost"] == pytest.approx(sum(o["total_cost"] or 0 for o in obs))
        assert r["user_id"] == obs[0]["user_id"] and r["session_id"] == obs[0]["session_id"]
    sessions: dict[tuple, list] = defaultdict(list)
    for r in rows.values():
        if r["session_id"]:
            sessions[(r["project_id"], r["session_id"])].append(r)
    got = {
        (s["project_id"], s["session_id"]): s for s in query_rows(ch, f"SELECT * FROM {DB}.session_summaries")
    }
    assert set(got) == set(sessions) and sessions
    for key, trs in sessions.items():
        assert got[key]["traces"] == len(trs)
        assert got[key]["users"] == len({t["user_id"] for t in trs})
        assert got[key]["total_cost"] == pytest.approx(sum(t["total_cost"] for t in trs))


def test_model_latency_daily_matches(filled):
    ch = filled
    model = load_models()["model_latency_daily"]
    for day in days_in_events(ch):
        build_day(ch, model, day)
    latencies: dict[tuple, list] = defaultdict(list)
    for e in _events(ch):
        if e["type"] == "GENERATION" and e["end_time"] is not None:
            key = (e["project_id"], e["start_time"].date(), e["provided_model_name"])
            latencies[key].append(int((e["end_time"] - e["start_time"]).total_seconds() * 1000))
    rows = {
        (r["project_id"], r["day"], r["model"]): r
        for r in query_rows(ch, f"SELECT * FROM {DB}.model_latency_daily")
    }
    assert set(rows) == set(latencies) and latencies
    for key, values in latencies.items():
        ordered = sorted(values)
        assert rows[key]["generations"] == len(values)
        assert rows[key]["latency_p50_ms"] == ordered[int(0.5 * len(ordered))]
        assert rows[key]["latency_p99_ms"] == ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def test_rebuilding_a_day_replaces_it_exactly(filled, env, s3):
    ch = filled
    model = load_models()["usage_daily"]
    day = days_in_events(ch)[-1]
    build_day(ch, model, day)
    first = query_rows(ch, USAGE_ROWS)
    build_day(ch, model, day)
    build_day(ch, model, day)
    assert query_rows(ch, USAGE_ROWS) == first  # no double counts
    # late data for that day: the re-run reflects it, still once
    keys = generate(s3, env.raw_bucket, "", objects=2, traces_per_object=4, seed=99).keys
    load_objects(ch, s3, keys, env, run_id="t")
    propagate(ch, delay_seconds=0, interval_seconds=180)
    build_day(ch, model, day)
    total = query_scalar(
        ch, f"SELECT sum(observations) FROM {DB}.usage_daily WHERE day = {{d:Date}}", {"d": day}
    )
    assert total == query_scalar(
        ch, f"SELECT count() FROM {DB}.events_core WHERE toDate(start_time) = {{d:Date}}", {"d": day}
    )
    assert reconcile(ch, model) == []


@BOTH_BACKENDS
def test_replay_with_changed_logic_swaps_without_an_empty_or_doubled_table(filled, tmp_path):
    ch = filled
    models = load_models()
    rebuild(ch, models["trace_summaries"])
    before = query_scalar(ch, f"SELECT count() FROM {DB}.trace_summaries")
    # new logic: cost in micro-dollars
    changed_dir = tmp_path / "models"
    shutil.copytree(MODELS_DIR, changed_dir)
    path = changed_dir / "trace_summaries.sql"
    path.write_text(
        path.read_text().replace(
            "sum(ifNull(total_cost, 0)) AS total_cost", "sum(ifNull(total_cost, 0)) * 1e6 AS total_cost"
        )
    )
    changed = load_models(changed_dir)["trace_summaries"]
    assert changed.code_version != models["trace_summaries"].code_version  # Dagster shows it stale

    seen: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.append(query_scalar(ch, f"SELECT count() FROM {DB}.trace_summaries"))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(3):
            rebuild(ch, changed)
    finally:
        stop.set()
        thread.join()
    assert seen and set(seen) == {before}  # never empty, never doubled, at any point between statements
    old_cost = query_scalar(ch, f"SELECT sum(ifNull(total_cost, 0)) FROM {DB}.events_core")
    assert float(query_scalar(ch, f"SELECT sum(total_cost) FROM {DB}.trace_summaries")) == pytest.approx(
        float(old_cost) * 1e6
    )
    assert (
        query_scalar(
            ch, f"SELECT count() FROM system.tables WHERE database = '{DB}' AND name LIKE '%shadow%'"
        )
        == 0
    )


def test_backfill_of_some_days_is_atomic_and_keeps_the_others(filled):
    ch = filled
    model = load_models()["usage_daily"]
    days = days_in_events(ch)
    for day in days:
        build_day(ch, model, day)
    before = query_rows(ch, USAGE_ROWS)
    rebuild(ch, model, [days[-1]])
    assert query_rows(ch, USAGE_ROWS) == before


def test_checks_fail_on_tampered_data(filled):
    ch = filled
    models = load_models()
    usage, traces = models["usage_daily"], models["trace_summaries"]
    for day in days_in_events(ch):
        build_day(ch, usage, day)
    rebuild(ch, traces)
    assert key_violations(ch, usage) == {"empty_keys": 0, "duplicate_keys": 0} and reconcile(ch, usage) == []
    ch.command(f"INSERT INTO {DB}.usage_daily SELECT * FROM {DB}.usage_daily LIMIT 1")
    assert key_violations(ch, usage)["duplicate_keys"] == 1
    broken = reconcile(ch, usage)  # the duplicate also breaks the totals
    assert broken
    # scoped to the days a build made: the broken day shows, the others do not
    bad = {d["day"] for d in broken}
    others = [d for d in days_in_events(ch) if str(d) not in bad]
    assert reconcile(ch, usage, days=[date.fromisoformat(d) for d in bad]) and others
    assert reconcile(ch, usage, days=others) == []
    ch.command(
        f"ALTER TABLE {DB}.trace_summaries UPDATE total_cost = total_cost + 1 WHERE 1 "
        "SETTINGS mutations_sync = 2"
    )
    assert [d["column"] for d in reconcile(ch, traces)] == ["total_cost"]
    ch.command(f"INSERT INTO {DB}.trace_summaries (project_id, trace_id) VALUES ('', 'x')")
    assert key_violations(ch, traces)["empty_keys"] == 1


def _with_checks(*names: str) -> list:
    """The model assets and their checks, as a job of the code location holds them."""
    from assets.models import MODEL_CHECKS, model_assets

    keys = {dg.AssetKey(name) for name in names}
    checks = [c for c in MODEL_CHECKS if c.check_key.asset_key in keys]
    return [a for a in model_assets(load_settings()) if a.key in keys] + checks


def test_models_materialize_in_dagster(filled, env, monkeypatch):
    from orchestration.resources import build_resources

    monkeypatch.setenv("TRACEHOUSE_CORE_TRUNCATE_CHARS", "8")  # reaches the assets as the settings resource

    *earlier, last = days_in_events(filled)
    for other in earlier:  # other days already built: the day's materialization must not count them
        build_day(filled, load_models()["usage_daily"], other)
    day = last.isoformat()
    resources = build_resources()
    partitioned = dg.materialize(_with_checks("usage_daily"), resources=resources, partition_key=day)
    assert partitioned.success
    tables = dg.materialize(_with_checks("trace_summaries", "session_summaries"), resources=resources)
    assert tables.success
    checks = partitioned.get_asset_check_evaluations() + tables.get_asset_check_evaluations()
    assert len(checks) == 6 and all(c.passed for c in checks), [(c.check_name, c.metadata) for c in checks]
    meta = {
        m.materialization.asset_key.path[-1]: m.materialization.metadata
        for m in tables.get_asset_materialization_events()
    }
    longest = query_scalar(filled, f"SELECT max(lengthUTF8(input)) FROM {DB}.trace_summaries")
    assert longest == 8  # truncate() cut to the configured width (longer inputs exist in the fixtures)
    lineage = meta["trace_summaries"]["dagster/column_lineage"].value
    assert dg.TableColumnDep(dg.AssetKey("traces"), "name") in lineage.deps_by_column["name"]
    assert meta["session_summaries"]["dagster/row_count"].value > 0
    # a day's materialization reports the day's rows; the other days' rows are not its own
    day_meta = partitioned.get_asset_materialization_events()[0].materialization.metadata
    day_rows = query_scalar(
        filled, f"SELECT count() FROM {DB}.usage_daily WHERE day = {{d:Date}}", {"d": day}
    )
    assert day_meta["dagster/row_count"].value == day_rows > 0
    assert (
        day_meta["table_rows"].value
        == query_scalar(filled, f"SELECT count() FROM {DB}.usage_daily")
        > day_rows
    )


def test_model_checks_run_alone_on_the_days_the_latest_build_made(filled, env):
    from orchestration.resources import build_resources

    first, *_, last = days_in_events(filled)
    for day in days_in_events(filled):
        build_day(filled, load_models()["usage_daily"], day)
    instance = dg.DagsterInstance.ephemeral()
    resources = build_resources()
    defs = _with_checks("usage_daily", "trace_summaries")
    built = dg.materialize(
        _with_checks("usage_daily"), resources=resources, partition_key=str(last), instance=instance
    )
    assert built.success and len(built.get_asset_check_evaluations()) == 2  # they ride along with a build

    def checks_alone(asset: str) -> dict:
        run = dg.materialize(
            defs, resources=resources, instance=instance, selection=dg.AssetSelection.checks_for_assets(asset)
        )
        assert run.success and not run.get_asset_materialization_events()  # nothing rebuilt
        return {c.check_name: c for c in run.get_asset_check_evaluations()}

    def tamper(day: date) -> None:
        filled.command(
            f"ALTER TABLE {DB}.usage_daily UPDATE observations = observations + 1 "
            "WHERE day = {d:Date} SETTINGS mutations_sync = 2",
            {"d": day},
        )

    tamper(first)  # a day the latest build did not make: not its business
    checks = checks_alone("usage_daily")
    reconciles = checks["reconciles_with_events"]
    assert reconciles.passed and reconciles.metadata["days_checked"].value == str(last)
    assert checks["unique_not_null_keys"].passed
    tamper(last)  # the day it made
    reconciles = checks_alone("usage_daily")["reconciles_with_events"]
    assert not reconciles.passed and reconciles.metadata["differences"].value > 0
    # a model never built says so; one no Dagster build of this instance made is checked whole
    assert (
        "materialize it first"
        in checks_alone("trace_summaries")["reconciles_with_events"].metadata["reason"].value
    )
    rebuild(filled, load_models()["trace_summaries"])
    assert checks_alone("trace_summaries")["reconciles_with_events"].metadata["days_checked"].value == "all"


def test_replay_command(env, s3):
    from orchestration.clickhouse import open_clickhouse
    from orchestration.schema import apply_migrations

    with open_clickhouse(None, env.chdb_path) as ch:
        apply_migrations(ch)
        keys = generate(s3, env.raw_bucket, "", objects=2, traces_per_object=4, seed=5).keys
        load_objects(ch, s3, keys, env, run_id="t")
        propagate(ch, delay_seconds=0, interval_seconds=180)
        expected = query_scalar(
            ch,
            f"SELECT count() FROM (SELECT DISTINCT project_id, toDate(start_time), "
            f"provided_model_name FROM {DB}.events_core)",
        )
        days = days_in_events(ch)
        last_day = query_scalar(
            ch,
            f"SELECT count() FROM (SELECT DISTINCT project_id, provided_model_name FROM {DB}.events_core "
            "WHERE toDate(start_time) = {d:Date})",
            {"d": days[-1]},
        )
    cli = [str(Path(sys.executable).parent / "tracehouse"), "replay"]

    def replay(*args: str) -> str:
        done = subprocess.run(
            [*cli, *args], cwd=REPO, env=os.environ, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert f"replayed=usage_daily rows={expected}" in replay("usage_daily")
    assert f"replayed=usage_daily rows={last_day}" in replay(
        "usage_daily", "--days", str(days[-1])
    )  # its rows
    assert "replayed=trace_summaries rows=8" in replay("trace_summaries")
    # the command ran Dagster: runs, per-partition materializations and checks are in the UI's instance
    with dg.DagsterInstance.from_config(str(load_settings().dagster_home)) as instance:
        runs = instance.get_runs()
        assert {r.job_name for r in runs} == {"apply_schema", "rebuild_recent_days", "replay_models"}, [
            r.job_name for r in runs
        ]
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        partitions = instance.get_materialized_partitions(dg.AssetKey("usage_daily"))
        assert partitions == {str(d) for d in days}
        check = instance.get_latest_asset_check_evaluation_record(
            dg.AssetCheckKey(dg.AssetKey("trace_summaries"), "reconciles_with_events")
        )
        assert check and check.status.value == "SUCCEEDED"
    unknown = subprocess.run(
        [*cli, "nope"], cwd=REPO, env=os.environ, capture_output=True, text=True, timeout=120
    )
    assert unknown.returncode != 0 and "unknown model" in unknown.stderr


@BOTH_BACKENDS
def test_replay_events_from_raw_swaps_in_new_logic_and_keeps_live_loads(env, s3, ch):
    """Staging-level logic changed: events is rebuilt from the raw bucket in a shadow database and swapped
    in; a load the live path commits meanwhile is in the result exactly once."""
    from orchestration.replay import replay_from_raw

    first = generate(s3, env.raw_bucket, "", objects=3, traces_per_object=3, seed=31).keys
    load_objects(ch, s3, first, env, run_id="t")
    propagate(ch, delay_seconds=0, interval_seconds=180)
    before = query_scalar(ch, f"SELECT count() FROM {DB}.events")
    # the "old logic" wrote different names; the replay must bring back what the current code derives
    ch.command(f"ALTER TABLE {DB}.events UPDATE name = 'old logic' WHERE 1 SETTINGS mutations_sync = 2")
    late = generate(s3, env.raw_bucket, "", objects=1, traces_per_object=2, seed=32).keys

    def live_load_meanwhile() -> None:
        load_objects(ch, s3, late, env, run_id="live")
        propagate(ch, delay_seconds=0, interval_seconds=180)

    result = replay_from_raw(ch, s3, env, before_swap=live_load_meanwhile)
    assert result.objects == len(first) + len(late) and result.caught_up > 0
    staged = query_scalar(ch, f"SELECT uniqExact(project_id, id) FROM {DB}.observations_staging")
    assert staged > before
    for table in ("events", "events_core"):
        assert query_scalar(ch, f"SELECT count() FROM {DB}.{table}") == staged
        assert query_scalar(ch, f"SELECT count() - uniqExact(project_id, id) FROM {DB}.{table}") == 0
        assert query_scalar(ch, f"SELECT countIf(name = 'old logic') FROM {DB}.{table}") == 0
    assert query_scalar(ch, "SELECT count() FROM system.databases WHERE name = 'tracehouse_replay'") == 0


def test_column_lineage_is_visible_without_dagster_plus(tmp_path):
    """Open-source Dagster draws dagster/column_lineage only in Dagster+: each model also carries it as a
    table in its definition metadata, and `tracehouse lineage` prints it."""
    import subprocess
    import sys
    from pathlib import Path

    from assets.models import model_assets

    asset = next(a for a in model_assets(load_settings()) if a.key.path[-1] == "usage_daily")
    table = asset.specs_by_key[asset.key].metadata["column_lineage"].value
    assert "| observations | events_core.id |" in table
    assert "| total_cost | events_core.cost_details, events_core.total_cost |" in table
    cli = [str(Path(sys.executable).parent / "tracehouse"), "lineage", "trace_summaries"]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=60, env={"COLUMNS": "200", "PATH": ""})
    assert done.returncode == 0, done.stderr
    assert "traces.name" in done.stdout and "events_core.id" in done.stdout
