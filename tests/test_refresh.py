"""Keyed models refresh only what changed (orchestration/refresh.py), and the result equals a whole rebuild:
after late spans that move a trace to the day before (midnight), a late trace update that moves a trace to
another session, a late score, a trace with no observation and an observation whose start moved — and after
a refresh killed between replacing its partitions and recording what it changed."""

import copy
import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from orchestration import refresh
from orchestration.clickhouse import open_clickhouse, query_rows
from orchestration.generate import generate
from orchestration.loader import load_objects
from orchestration.models import load_models
from orchestration.propagation import propagate
from orchestration.refresh import build
from orchestration.schema import apply_migrations
from tests.conftest import INGESTION_V2, OTLP_PB, minute_key, put

DB = "tracehouse"
REPO = Path(__file__).resolve().parents[1]
V2_TRACE = "380a383c-28aa-4973-8a11-96c486e106ac"
MIDNIGHT = datetime(2026, 11, 24, tzinfo=UTC)
KEYED = ("trace_summaries", "session_summaries")


def _v2_events() -> dict[str, dict]:
    """One event of each type of the captured v2 batch (the shapes the Langfuse SDK sends)."""
    return {e["type"]: e for e in json.loads(INGESTION_V2.read_bytes())["batch"]}


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _load(ch, s3, env, batches: dict[str, bytes]) -> None:
    keys = [put(s3, env, key, body) for key, body in batches.items()]
    assert load_objects(ch, s3, keys, env, run_id="t").count("loaded") == len(keys)
    propagate(ch, delay_seconds=0, interval_seconds=180)


def _first_load(ch, s3, env) -> None:
    _load(ch, s3, env, {minute_key("p1", "ingestion", "v2.json"): INGESTION_V2.read_bytes()})
    _load(ch, s3, env, {minute_key("p1", "otlp", "v5.binpb.gz"): OTLP_PB.read_bytes()})
    keys = generate(s3, env.raw_bucket, "", objects=4, traces_per_object=5, seed=11, when=MIDNIGHT).keys
    assert load_objects(ch, s3, keys, env, run_id="t").count("loaded") == 4
    propagate(ch, delay_seconds=0, interval_seconds=180)


def _pick(ch) -> dict[str, dict]:
    """Three generated traces of project demo-a: one to get an earlier span, one to change session, one to
    get a score."""
    rows = query_rows(
        ch,
        f"SELECT trace_id, any(session_id) AS session, min(start_time) AS start FROM {DB}.events_current "
        "WHERE project_id = 'demo-a' AND session_id != '' GROUP BY trace_id ORDER BY trace_id LIMIT 3",
    )
    return dict(zip(("earlier", "moved", "scored"), rows, strict=True))


def _late_batches(picked: dict[str, dict]) -> dict[str, bytes]:
    v2 = _v2_events()
    earlier = picked["earlier"]
    span = copy.deepcopy(v2["span-create"])
    span["id"], span["body"]["id"] = "late-evt-1", "late-span-1"
    span["body"]["traceId"] = earlier["trace_id"]
    # starts a minute before midnight of the day the trace started: the trace moves to the day before
    day_start = datetime.combine(earlier["start"].date(), datetime.min.time(), tzinfo=UTC)
    span["body"]["startTime"] = _iso(day_start - timedelta(minutes=1))
    moved = copy.deepcopy(v2["trace-create"])
    moved["id"] = "late-evt-2"
    moved["body"] = {"id": picked["moved"]["trace_id"], "sessionId": "sess-late", "userId": "user-late"}
    score = copy.deepcopy(v2["score-create"])
    score["id"], score["body"]["id"], score["body"]["traceId"] = (
        "late-evt-3",
        "late-score",
        picked["scored"]["trace_id"],
    )
    demo_a = [span, moved, score]
    only = copy.deepcopy(v2["trace-create"])
    only["id"], only["body"]["id"] = "late-evt-4", "late-trace-only"
    started = copy.deepcopy(v2["span-update"])  # the v2 retrieval span now says it started a day later
    started["id"], started["body"]["startTime"] = "late-evt-5", "2026-11-25T02:33:25.622652Z"
    return {
        minute_key("demo-a", "ingestion", "late.json", "2026-11-30T10:00"): orjson.dumps({"batch": demo_a}),
        minute_key("p1", "ingestion", "late.json", "2026-11-30T10:00"): orjson.dumps(
            {"batch": [only, started]}
        ),
    }


def _snapshot(ch, model: str) -> list[tuple]:
    rows = query_rows(ch, f"SELECT * FROM {DB}.{model} ORDER BY ALL")
    return [tuple(round(v, 9) if isinstance(v, float) else v for v in r.values()) for r in rows]


def _equals_whole_rebuild(ch) -> None:
    models = load_models()
    refreshed = {name: _snapshot(ch, name) for name in KEYED}
    for name in KEYED:
        assert build(ch, models[name], full=True).full
    for name in KEYED:
        assert _snapshot(ch, name) == refreshed[name], name


def test_refresh_recomputes_only_changed_traces_and_equals_a_whole_rebuild(env, s3, ch, monkeypatch):
    monkeypatch.setattr(refresh, "LOOKBACK", timedelta(0))  # the whole test runs within the real lookback
    models = load_models()
    _first_load(ch, s3, env)
    for name in KEYED:
        first = build(ch, models[name])
        assert first.full and first.reason == "first build"
    picked = _pick(ch)
    old_day = query_rows(
        ch,
        f"SELECT toDate(start_time) AS d FROM {DB}.trace_summaries WHERE trace_id = {{t:String}}",
        {"t": picked["earlier"]["trace_id"]},
    )[0]["d"]
    _load(ch, s3, env, _late_batches(picked))

    traces = build(ch, models["trace_summaries"])
    assert not traces.full
    # exactly the traces the late batches touched (the moved trace's rows were repaired: 'events' entries)
    assert traces.changed_keys == 5
    sessions = build(ch, models["session_summaries"])
    assert not sessions.full
    # the moved trace's old and new session, and the sessions of the other changed traces
    assert sessions.changed_keys == 5

    row = query_rows(
        ch,
        f"SELECT toDate(start_time) AS d FROM {DB}.trace_summaries WHERE trace_id = {{t:String}}",
        {"t": picked["earlier"]["trace_id"]},
    )
    assert [r["d"] for r in row] == [old_day - timedelta(days=1)]  # moved to the day before, once
    assert {"late-trace-only", picked["moved"]["trace_id"]} <= {
        r["trace_id"] for r in query_rows(ch, f"SELECT trace_id FROM {DB}.trace_summaries")
    }
    left = query_rows(
        ch,
        f"SELECT traces FROM {DB}.session_summaries WHERE session_id = {{s:String}}",
        {"s": picked["moved"]["session"]},
    )
    assert sum(r["traces"] for r in left) == 0  # the session the trace left lost it
    _equals_whole_rebuild(ch)

    # nothing new: nothing recomputed; a model whose upstream was rebuilt whole is rebuilt whole too
    again = build(ch, models["trace_summaries"])
    assert (again.full, again.changed_keys, again.partitions) == (False, 0, [])
    assert not build(ch, models["session_summaries"]).full
    assert build(ch, models["trace_summaries"], full=True).full
    after_whole = build(ch, models["session_summaries"])
    assert (after_whole.full, after_whole.reason) == (True, "trace_summaries was rebuilt whole since")


def test_a_changed_model_file_is_rebuilt_whole(env, s3, ch, tmp_path):
    _first_load(ch, s3, env)
    model = load_models()["trace_summaries"]
    assert build(ch, model).full
    assert not build(ch, model).full
    edited = model.__class__(
        model.name, model.template + "\n-- edited", model.config, model.refs, model.sources
    )
    result = build(ch, edited)
    assert result.full and result.reason == "the model's SQL changed"


_KILL = textwrap.dedent(
    """
    import os
    from orchestration import refresh
    from orchestration.clickhouse import open_clickhouse
    from orchestration.models import load_models
    from orchestration.settings import load_settings

    def die(*_args, **_kwargs):
        os._exit(9)

    refresh._record_changes = die  # partitions replaced, old rows not yet recorded
    with open_clickhouse(None, load_settings().chdb_path) as ch:
        refresh.build(ch, load_models()["trace_summaries"])
    """
)


def test_a_refresh_killed_after_replacing_partitions_is_completed_by_the_next(env, s3, monkeypatch):
    monkeypatch.setattr(refresh, "LOOKBACK", timedelta(0))
    models = load_models()
    with open_clickhouse(None, env.chdb_path) as ch:
        apply_migrations(ch)
        _first_load(ch, s3, env)
        for name in KEYED:
            build(ch, models[name])
        picked = _pick(ch)
        _load(ch, s3, env, _late_batches(picked))
    child = subprocess.run(
        [sys.executable, "-c", _KILL], cwd=REPO, env=os.environ, capture_output=True, timeout=180
    )
    assert child.returncode == 9, child.stderr.decode()[-2000:]
    with open_clickhouse(None, env.chdb_path) as ch:
        # killed where it says: the trace moved session in trace_summaries, no record of it yet
        moved = query_rows(
            ch,
            f"SELECT session_id FROM {DB}.trace_summaries WHERE trace_id = {{t:String}}",
            {"t": picked["moved"]["trace_id"]},
        )
        assert [r["session_id"] for r in moved] == ["sess-late"]
        assert not query_rows(ch, f"SELECT 1 FROM {DB}.change_log WHERE source = 'trace_summaries'")
        retried = build(ch, models["trace_summaries"])
        assert not retried.full
        assert not build(ch, models["session_summaries"]).full
        left = query_rows(
            ch,
            f"SELECT traces FROM {DB}.session_summaries WHERE session_id = {{s:String}}",
            {"s": picked["moved"]["session"]},
        )
        assert sum(r["traces"] for r in left) == 0
        _equals_whole_rebuild(ch)


def test_daily_models_follow_late_data_to_the_days_it_changed(env, s3, ch, monkeypatch):
    """The hourly refresh_changed_days job rebuilds the days change_log lists — any day, not only the
    nightly backfill's last three — and records each as a materialization of its partition."""
    import dagster as dg

    from assets.models import refresh_changed_days
    from orchestration.models import build_day
    from orchestration.resources import build_resources

    monkeypatch.setattr(refresh, "LOOKBACK", timedelta(0))
    _first_load(ch, s3, env)
    instance = dg.DagsterInstance.ephemeral()

    def run() -> dict[str, set[str]]:
        result = refresh_changed_days.execute_in_process(resources=build_resources(), instance=instance)
        assert result.success
        days: dict[str, set[str]] = {}
        for event in result.get_asset_materialization_events():
            m = event.materialization
            days.setdefault(m.asset_key.path[-1], set()).add(m.partition)
        return days

    first = run()  # first build: whole, every day the models hold
    assert first["usage_daily"] == {"2026-11-23", "2026-11-24"}
    picked = _pick(ch)
    _load(ch, s3, env, _late_batches(picked))
    span_day = (picked["earlier"]["start"].date() - timedelta(days=1)).isoformat()
    late = run()
    # the late span's day (and the days of the rows the late batches rewrote: the v2 span moved a day on,
    # the repaired rows of the moved trace); the late score's day for scores_daily
    assert span_day in late["usage_daily"] and late["usage_daily"] == late["model_latency_daily"]
    assert "2026-11-25" in late["usage_daily"] and late["scores_daily"] == {"2026-11-24"}
    models = load_models()
    got = _snapshot(ch, "usage_daily")
    for day in {"2026-11-22", "2026-11-23", "2026-11-24", "2026-11-25"}:
        build_day(ch, models["usage_daily"], datetime.fromisoformat(day).date())
    assert _snapshot(ch, "usage_daily") == got  # equal to rebuilding every day
    assert run() == {}  # nothing changed since
