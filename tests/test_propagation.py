"""Propagation into events/events_core on real chDB: windows, delay, catch-up, exactly once, repair."""

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from assets.events import duplicate_rows, missing_from_events, truncation_violations
from orchestration.clickhouse import open_clickhouse, query_rows, query_scalar
from orchestration.columns import column_names
from orchestration.generate import generate
from orchestration.lineage import insert_lineage
from orchestration.loader import load_objects
from orchestration.propagation import (
    events_lineage,
    propagate,
    propagate_window,
    server_now,
    trace_attribute_coverage,
    watermark,
)
from orchestration.schema import apply_migrations, view_lineage
from tests.conftest import BOTH_BACKENDS, INGESTION_V2, OTLP_PB, connect, minute_key, put

DB = "tracehouse"
REPO = Path(__file__).resolve().parents[1]
TRACE_V2 = "380a383c-28aa-4973-8a11-96c486e106ac"


def load(ch, s3, env, objects: dict[str, bytes]) -> None:
    keys = [put(s3, env, key, body) for key, body in objects.items()]
    report = load_objects(ch, s3, keys, env, run_id="t")
    assert report.count("quarantined") == 0


def run(ch, **kwargs):
    kwargs.setdefault("delay_seconds", 0)
    kwargs.setdefault("interval_seconds", 180)
    return propagate(ch, **kwargs)


def events(ch, where: str = "1") -> dict[str, dict]:
    rows = query_rows(ch, f"SELECT * FROM {DB}.events WHERE {where}")
    return {r["id"]: r for r in rows}


def exactly_once(ch) -> None:
    for table in ("events", "events_core"):
        assert duplicate_rows(ch, table) == 0, table
    assert missing_from_events(ch) == 0
    staged = query_scalar(ch, f"SELECT uniqExact(project_id, id) FROM {DB}.observations_staging")
    assert query_scalar(ch, f"SELECT count() FROM {DB}.events") == staged
    assert query_scalar(ch, f"SELECT count() FROM {DB}.events_core") == staged


def _split_v2() -> tuple[bytes, bytes]:
    """The v2 batch without its second trace-create, and that trace-create alone (late attributes)."""
    batch = json.loads(INGESTION_V2.read_bytes())
    events_ = batch["batch"]
    late = [e for e in events_ if e["type"] == "trace-create" and e["body"].get("userId")]
    early = [e for e in events_ if e not in late]
    return (
        orjson.dumps({**batch, "batch": early}),
        orjson.dumps({**batch, "batch": late}),
    )


@BOTH_BACKENDS
def test_fixtures_propagate_with_trace_attributes_on_every_observation(env, s3, ch):
    load(
        ch,
        s3,
        env,
        {
            minute_key("p1", "otlp", "a.binpb.gz"): OTLP_PB.read_bytes(),
            minute_key("p1", "ingestion", "b.json"): INGESTION_V2.read_bytes(),
        },
    )
    report = run(ch)
    assert report.observations == 6 and len(report.windows) == 1
    rows = events(ch)
    v2 = [r for r in rows.values() if r["trace_id"] == TRACE_V2]
    assert len(v2) == 3
    for r in v2:  # the second trace-create in the batch carries these
        assert (r["user_id"], r["session_id"], r["tags"], r["trace_name"]) == (
            "user-7",
            "sess-3",
            ["beta"],
            "chat-turn",
        )
    generation = next(r for r in v2 if r["type"] == "GENERATION")
    assert generation["output"] == "hello!"  # the generation-update patch merged onto the create
    assert generation["end_time"] is not None and dict(generation["usage_details"])["input"] == 5
    otlp = [r for r in rows.values() if r["trace_id"] != TRACE_V2]
    assert {r["user_id"] for r in otlp} == {"user-42"} and {r["session_id"] for r in otlp} == {"sess-7"}
    assert all(r["tags"] == ["agent", "prod"] and r["trace_name"] == "agent-run" for r in otlp)
    exactly_once(ch)
    rows_, current = trace_attribute_coverage(ch, server_now(ch) - timedelta(days=3650))
    assert rows_ == current == 6


def test_late_trace_attributes_are_repaired(env, s3, ch):
    early, late = _split_v2()
    load(ch, s3, env, {minute_key("p1", "ingestion", "early.json"): early})
    first = run(ch)
    assert first.observations == 3
    assert {r["user_id"] for r in events(ch).values()} == {""}

    load(ch, s3, env, {minute_key("p1", "ingestion", "late.json"): late})
    second = run(ch)
    assert second.repaired == 3 and second.replaced == 3
    rows = events(ch)
    assert {(r["user_id"], r["session_id"], tuple(r["tags"])) for r in rows.values()} == {
        ("user-7", "sess-3", ("beta",))
    }
    core = query_rows(ch, f"SELECT user_id FROM {DB}.events_core")
    assert [r["user_id"] for r in core] == ["user-7"] * 3
    generation = next(r for r in rows.values() if r["type"] == "GENERATION")
    assert generation["output"] == "hello!" and dict(generation["usage_details"])["output"] == 2
    exactly_once(ch)
    total, current = trace_attribute_coverage(ch, server_now(ch) - timedelta(days=3650))
    assert total == current == 3


def test_late_patch_after_propagation_replaces_the_row(env, s3, ch):
    batch = json.loads(INGESTION_V2.read_bytes())
    creates = [e for e in batch["batch"] if not e["type"].endswith("-update")]
    updates = [e for e in batch["batch"] if e["type"].endswith("-update")]
    load(ch, s3, env, {minute_key("p1", "ingestion", "c.json"): orjson.dumps({**batch, "batch": creates})})
    run(ch)
    assert events(ch, "type = 'GENERATION'").popitem()[1]["output"] == ""
    load(ch, s3, env, {minute_key("p1", "ingestion", "u.json"): orjson.dumps({**batch, "batch": updates})})
    report = run(ch)
    assert report.replaced == 2  # the generation and the span got their patches
    generation = events(ch, "type = 'GENERATION'").popitem()[1]
    assert generation["output"] == "hello!" and generation["name"] == "llm"
    exactly_once(ch)


def test_delay_holds_back_recent_commits(env, s3, ch):
    load(ch, s3, env, {minute_key("p1", "otlp", "a.binpb.gz"): OTLP_PB.read_bytes()})
    held = run(ch, delay_seconds=300)
    assert held.windows == [] and watermark(ch) is None
    assert query_scalar(ch, f"SELECT count() FROM {DB}.events") == 0
    later = run(ch, delay_seconds=300, now=server_now(ch) + timedelta(seconds=301))
    assert later.observations == 3 and watermark(ch) is not None


def test_missed_windows_catch_up_in_bounded_chunks(env, s3, ch):
    for i in range(4):
        summary = generate(
            s3, env.raw_bucket, "", objects=1, traces_per_object=2, formats=["otlp_json"], seed=i
        )
        load_objects(ch, s3, summary.keys, env, run_id="t")
        time.sleep(1.1)
    first = run(ch, interval_seconds=1, max_windows=2)
    assert len(first.windows) == 2 and not first.caught_up
    assert all(w.end - w.start <= timedelta(seconds=1) for w in first.windows)
    rest = run(ch, interval_seconds=1, max_windows=20)
    assert len(rest.windows) >= 2 and rest.caught_up
    assert rest.windows[0].start == first.windows[-1].end  # contiguous: nothing skipped, nothing twice
    assert run(ch, interval_seconds=1).windows == []
    exactly_once(ch)


def test_rerunning_a_window_and_racing_runs_leave_each_observation_once(env, s3, ch):
    load(ch, s3, env, {minute_key("p1", "ingestion", "b.json"): INGESTION_V2.read_bytes()})
    report = run(ch)
    window = report.windows[0]
    propagate_window(ch, window.start, window.end)  # manual re-run from the UI
    exactly_once(ch)

    threads = [
        threading.Thread(target=propagate_window, args=(ch, window.start, window.end)) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    exactly_once(ch)
    assert {r["user_id"] for r in events(ch).values()} == {"user-7"}


def test_old_window_rerun_does_not_bring_back_stale_rows(env, s3, ch):
    early, late = _split_v2()
    load(ch, s3, env, {minute_key("p1", "ingestion", "early.json"): early})
    old = run(ch).windows[0]
    load(ch, s3, env, {minute_key("p1", "ingestion", "late.json"): late})
    run(ch)
    propagate_window(ch, old.start, old.end, horizon=watermark(ch))
    assert {r["user_id"] for r in events(ch).values()} == {"user-7"}
    exactly_once(ch)


_CRASH = textwrap.dedent(
    """
    import os, sys
    from orchestration import propagation as p
    from orchestration.clickhouse import open_clickhouse
    from orchestration.settings import load_settings

    def die(*_args, **_kwargs):
        os._exit(9)

    def die_on(prefix, client):  # the statement starting with prefix never runs (either backend)
        command = type(client).command
        type(client).command = lambda self, sql, params=None: (
            die() if sql.startswith(prefix) else command(self, sql, params))

    point = sys.argv[1]
    with open_clickhouse(os.environ.get("CLICKHOUSE_URL"), load_settings().chdb_path) as ch:
        if point == "after_insert":  # the events insert committed, not yet published
            p.publish_rows = die
        elif point == "after_publish":  # published and superseded rows hidden, not yet deleted
            die_on("DELETE FROM tracehouse.events ", ch)
        elif point == "mid_cleanup":  # events cleaned, events_core not yet
            die_on("DELETE FROM tracehouse.events_core", ch)
        else:  # everything committed but the watermark row
            log = p._log
            p._log = lambda *a: die() if a[3] == "done" else log(*a)
        p.propagate(ch, delay_seconds=0, interval_seconds=180)
    """
)


@BOTH_BACKENDS
@pytest.mark.parametrize("crash_at", ["after_insert", "after_publish", "mid_cleanup", "before_watermark"])
def test_killed_run_is_completed_exactly_once_by_the_next(env, s3, crash_at):
    early, _ = _split_v2()
    with connect(env) as ch:
        apply_migrations(ch)
        load(ch, s3, env, {minute_key("p1", "ingestion", "b.json"): INGESTION_V2.read_bytes()})
        run(ch)  # a first window in events, so the crashed one has rows to supersede
        load(ch, s3, env, {minute_key("p1", "ingestion", "again.json"): early})
    child = subprocess.run(
        [sys.executable, "-c", _CRASH, crash_at], cwd=REPO, env=os.environ, capture_output=True, timeout=180
    )
    assert child.returncode == 9, child.stderr.decode()[-2000:]
    with connect(env) as ch:
        started = query_scalar(
            ch, f"SELECT countIf(status = 'started') - countIf(status = 'done') FROM {DB}.propagation_log"
        )
        assert started == 1  # the killed window never reached its watermark
        # the crash really left the work half done where it says (rows stored twice) ...
        half_done = {"after_insert": "events", "after_publish": "events", "mid_cleanup": "events_core"}
        if crash_at in half_done:
            assert duplicate_rows(ch, half_done[crash_at], visible=False) > 0
        # ... and readers still see every observation once
        observations = query_scalar(ch, f"SELECT uniqExact(project_id, id) FROM {DB}.events")
        for table in ("events", "events_core"):
            assert duplicate_rows(ch, table) == 0, table
            assert query_scalar(ch, f"SELECT count() FROM {DB}.{table}_current") == observations, table
        report = run(ch)
        assert len(report.windows) == 1
        exactly_once(ch)
        assert {r["user_id"] for r in events(ch).values()} == {"user-7"}


def test_events_core_truncates_and_flags(env, s3):
    with open_clickhouse(None, env.chdb_path) as ch:
        apply_migrations(ch, core_truncate_chars=64)  # TRACEHOUSE_CORE_TRUNCATE_CHARS=64
        summary = generate(s3, env.raw_bucket, "", objects=2, traces_per_object=3, payload_bytes=500, seed=7)
        load_objects(ch, s3, summary.keys, env, run_id="t")
        run(ch)
        assert truncation_violations(ch, 64) == 0
        rows = query_rows(
            ch,
            f"SELECT e.input AS full, c.input AS cut, c.input_truncated AS flag FROM {DB}.events e "
            f"JOIN {DB}.events_core c USING (project_id, id)",
        )
        assert rows and any(r["flag"] for r in rows)
        for r in rows:
            assert (
                len(r["cut"]) <= 64 and r["full"].startswith(r["cut"]) and r["flag"] == (len(r["full"]) > 64)
            )
        assert truncation_violations(ch, 32) > 0  # a tighter bound than the view's is reported


def test_checks_fail_on_broken_data(env, s3, ch):
    load(ch, s3, env, {minute_key("p1", "ingestion", "b.json"): INGESTION_V2.read_bytes()})
    run(ch)
    exactly_once(ch)
    since = server_now(ch) - timedelta(days=3650)
    ch.command(f"INSERT INTO {DB}.events SELECT * FROM {DB}.events LIMIT 1")  # a duplicate (and core copy)
    assert duplicate_rows(ch, "events") == 1 and duplicate_rows(ch, "events_core") == 1
    ch.command(f"DELETE FROM {DB}.events WHERE type = 'EVENT'")
    assert missing_from_events(ch) == 1
    ch.command(
        f"ALTER TABLE {DB}.events UPDATE user_id = 'stale' WHERE type = 'SPAN' SETTINGS mutations_sync = 2"
    )
    total, current = trace_attribute_coverage(ch, since)
    assert current < total
    ch.command(
        f"INSERT INTO {DB}.events_core (project_id, id, start_time, input) "
        "VALUES ('p1', 'x', now64(6), repeat('a', 5000))"
    )
    assert truncation_violations(ch, 2048) > 0


def test_run_once_no_delay_propagates_the_fixtures(env, s3):
    put(s3, env, minute_key("proj-1", "otlp", "a.binpb.gz"), OTLP_PB.read_bytes())
    put(s3, env, minute_key("proj-1", "ingestion", "b.json"), INGESTION_V2.read_bytes())
    cli = [str(Path(sys.executable).parent / "tracehouse"), "run-once", "--no-delay"]
    done = subprocess.run(cli, cwd=REPO, env=os.environ, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "propagated=6 repaired=0" in done.stdout
    with open_clickhouse(None, env.chdb_path) as ch:
        assert query_scalar(ch, f"SELECT count() FROM {DB}.events_core") == 6


def test_events_lineage_is_read_from_the_propagation_sql():
    """The lineage of events comes from the insert a propagation runs, through the trace attributes it folds
    and the prices it resolves; events_core's from its materialized view."""
    lineage = events_lineage()
    assert list(lineage) == column_names("events")
    assert lineage["usage_details"] == [("observations_staging", "usage_details")]
    assert lineage["provided_cost_details"] == [("observations_staging", "cost_details")]
    # a trace attribute: from traces_staging and from what spans carry, ranked by event time and object key
    assert lineage["trace_name"] == [
        ("observations_staging", "event_ts"), ("observations_staging", "source_key"),
        ("observations_staging", "trace_name"), ("traces_staging", "event_ts"), ("traces_staging", "name"),
        ("traces_staging", "source_key"),
    ]  # fmt: skip
    assert ("traces_staging", "version") in lineage["trace_version"]
    assert ("observations_staging", "version") not in lineage["trace_version"]  # spans carry no trace version
    # calculated cost: total_cost uses the alias cost_details defines, so it has the usage and model too
    for column in ("cost_details", "total_cost"):
        assert {"usage_details", "model_parameters", "start_time"} <= {c for _, c in lineage[column]}
    assert lineage["propagation_id"] == lineage["propagated_at"] == []  # constants of the run
    core = view_lineage("events_core_mv")
    assert set(core) == set(column_names("events_core"))
    assert core["input_truncated"] == core["input"] == [("events", "input")]


def test_insert_lineage_names_columns_by_the_insert_and_follows_clickhouse_aliases():
    schema = {"db": {"x": dict.fromkeys(["u", "v", "w"], "String"), "y": dict.fromkeys(["k", "z"], "String")}}
    sql = (
        "INSERT INTO db.t (a, b, c, d, e) SELECT x.u AS b, plus(x.v AS tmp_, 1), tmp_ + x.w, now(), y.z "
        "FROM db.x AS x JOIN db.y AS y ON x.u = y.k"
    )
    assert insert_lineage(sql, schema) == {
        "a": [("x", "u")], "b": [("x", "v")], "c": [("x", "v"), ("x", "w")], "d": [], "e": [("y", "z")],
    }  # fmt: skip
    with pytest.raises(ValueError, match="2 columns inserted from 1 expressions"):
        insert_lineage("INSERT INTO db.t (a, b) SELECT x.u FROM db.x AS x", schema)
