"""Raw objects in real SeaweedFS into real chDB staging: fixtures, quarantine, exactly once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from orchestration.clickhouse import open_clickhouse, query_rows, query_scalar
from orchestration.generate import generate
from orchestration.loader import load_objects
from orchestration.parsers import parse_object
from orchestration.raw_keys import parse_key
from orchestration.schema import apply_migrations
from tests.conftest import BOTH_BACKENDS, INGESTION_V2, OTLP_PB, SCORES_V5, connect, minute_key, put

DB = "tracehouse"


def counts(ch) -> dict[str, int]:
    return {
        t: query_scalar(ch, f"SELECT count() FROM {DB}.{t}")
        for t in ("observations_staging", "traces_staging", "scores_staging")
    }


@BOTH_BACKENDS
def test_shared_fixtures_load_with_every_field_in_place(env, s3, ch):
    keys = [
        put(s3, env, minute_key("proj-1", "otlp", "a.binpb.gz", "2026-11-24T01:46"), OTLP_PB.read_bytes()),
        put(s3, env, minute_key("proj-1", "ingestion", "s.json", "2026-11-24T01:46"), SCORES_V5.read_bytes()),
        put(s3, env, minute_key("proj-1", "ingestion", "b.json"), INGESTION_V2.read_bytes()),
    ]
    report = load_objects(ch, s3, keys, env, run_id="t")
    assert report.count("loaded") == 3 and report.count("quarantined") == 0
    assert counts(ch) == {"observations_staging": 8, "traces_staging": 2, "scores_staging": 2}
    gen = query_rows(
        ch, f"SELECT * FROM {DB}.observations_staging WHERE id = {{id:String}}", {"id": "85308cbf894bba1a"}
    )[0]
    assert gen["provided_model_name"] == "gpt-4o" and dict(gen["usage_details"]) == {
        "input": 12,
        "output": 3,
        "total": 15,
    }
    assert dict(gen["cost_details"]) == {"total": 0.00012} and gen["total_cost"] == 0.00012
    assert gen["user_id"] == "user-42" and gen["session_id"] == "sess-7" and gen["tags"] == ["agent", "prod"]
    assert dict(gen["trace_metadata"]) == {"tenant": "acme"} and gen["version"] == "v1.2.3"
    assert gen["type"] == "GENERATION" and gen["project_id"] == "proj-1" and gen["load_id"]
    assert gen["start_time"].isoformat() == "2026-11-24T01:46:42.110209+00:00"
    late = query_rows(
        ch, f"SELECT user_id, session_id, tags, release FROM {DB}.traces_staging WHERE user_id != ''"
    )
    assert late == [{"user_id": "user-7", "session_id": "sess-3", "tags": ["beta"], "release": "2.0.1"}]
    ledger = query_rows(
        ch,
        f"SELECT source_key, toString(status) s, observations, traces, scores FROM {DB}.ingest_ledger "
        "WHERE status != 'started' ORDER BY source_key",
    )
    assert [(r["s"], r["observations"], r["traces"], r["scores"]) for r in ledger] == [
        ("loaded", 0, 0, 1),
        ("loaded", 5, 2, 1),
        ("loaded", 3, 0, 0),
    ]


@BOTH_BACKENDS
def test_bad_objects_are_quarantined_and_the_rest_loads(env, s3, ch):
    good = generate(s3, env.raw_bucket, objects=4, traces_per_object=3, seed=7)
    bad = {
        put(s3, env, minute_key("p", "otlp", "empty.json"), b""): "object is empty",
        put(s3, env, minute_key("p", "otlp", "fake.json.gz"), b"{}"): "not gzip",
        put(
            s3, env, minute_key("p", "ingestion", "broken.json"), b'{"batch": [{"type": "trace-create"'
        ): "invalid JSON",
        put(s3, env, "p/somewhere/else.json", b"{}"): "does not match",
        put(s3, env, minute_key("p", "ingestion", "shape.json"), b'{"events": []}'): "must be",
    }
    report = load_objects(ch, s3, good.keys + list(bad), env, run_id="run-q")
    assert report.count("loaded") == 4 and report.count("quarantined") == len(bad)
    rows = {
        r["source_key"]: r for r in query_rows(ch, f"SELECT source_key, reason, run_id FROM {DB}.quarantine")
    }
    assert set(rows) == set(bad)
    for key, reason in bad.items():
        assert reason in rows[key]["reason"] and rows[key]["run_id"] == "run-q"
    # nothing vanished: every object is loaded or quarantined
    states = query_rows(
        ch,
        f"SELECT source_key, toString(argMax(status, recorded_at)) s "
        f"FROM {DB}.ingest_ledger GROUP BY source_key",
    )
    assert {r["source_key"] for r in states} == set(good.keys) | set(bad)
    assert {r["s"] for r in states} == {"loaded", "quarantined"}
    # re-running loads nothing twice and quarantines nothing twice
    before = counts(ch)
    again = load_objects(ch, s3, good.keys + list(bad), env, run_id="run-q2")
    assert again.count("skipped") == len(good.keys) + len(bad)
    assert counts(ch) == before and query_scalar(ch, f"SELECT count() FROM {DB}.quarantine") == len(bad)


def test_oversized_object_is_quarantined_without_reading_it(env, s3, ch, monkeypatch):
    monkeypatch.setenv("TRACEHOUSE_MAX_OBJECT_BYTES", "1000")
    from orchestration.settings import load_settings

    key = put(s3, env, minute_key("p", "otlp", "big.json"), b" " * 5000)
    [outcome] = load_objects(ch, s3, [key], load_settings()).outcomes
    assert outcome.status == "quarantined" and "over the 1000-byte limit" in outcome.reason


def _expected_rows(s3, env, keys) -> int:
    total = 0
    for key in keys:
        data = s3.get_object(Bucket=env.raw_bucket, Key=key)["Body"].read()
        total += parse_object(
            parse_key(key), data, max_object=env.max_object_bytes, max_record=env.max_record_bytes
        ).observation_count
    return total


_CRASHING_LOAD = textwrap.dedent("""
    import os, sys
    from orchestration.clickhouse import open_clickhouse
    from orchestration.loader import load_objects
    from orchestration.local_s3 import s3_client
    from orchestration.settings import load_settings

    table_to_die_on, nth = sys.argv[1], int(sys.argv[2])
    seen = {"n": 0}

    def insert_then_maybe_die(self, table, data):
        result = original(self, table, data)
        if table.endswith(table_to_die_on):
            seen["n"] += 1
            if seen["n"] == nth:
                os._exit(137)  # like a SIGKILL: no cleanup, no finally
        return result

    settings = load_settings()
    keys = sys.argv[3].split(",")
    with open_clickhouse(os.environ.get("CLICKHOUSE_URL"), settings.chdb_path) as ch:
        original = type(ch).insert_arrow  # either backend
        type(ch).insert_arrow = insert_then_maybe_die
        load_objects(ch, s3_client(settings.s3_endpoint_url), keys, settings, group_bytes=1)
""")


@BOTH_BACKENDS
@pytest.mark.parametrize(
    ("die_after", "nth"),
    [
        ("ingest_ledger", 1),  # after the 'started' ledger rows, before any staging row
        ("observations_staging", 1),  # mid-group: observations in, traces/scores not, ledger says started
        ("scores_staging", 2),  # second group fully staged, its ledger row not written
        ("ingest_ledger", 4),  # after the second group committed, before the third starts
    ],
)
def test_killed_load_then_rerun_has_every_row_exactly_once(env, s3, die_after, nth):
    summary = generate(
        s3, env.raw_bucket, objects=4, traces_per_object=5, formats=("ingestion", "otlp_json"), seed=3
    )
    with connect(env) as ch:
        apply_migrations(ch)
    proc = subprocess.run(
        [sys.executable, "-c", _CRASHING_LOAD, die_after, str(nth), ",".join(summary.keys)],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 137, proc.stderr
    with connect(env) as ch:
        load_objects(ch, s3, summary.keys, env, run_id="retry")
        assert query_scalar(ch, f"SELECT count() FROM {DB}.observations_staging") == _expected_rows(
            s3, env, summary.keys
        )
        dupes = query_scalar(
            ch,
            f"SELECT count() - uniqExact(source_key, id, event_ts, is_update) FROM {DB}.observations_staging",
        )
        assert dupes == 0
        committed = query_scalar(
            ch,
            f"SELECT count() FROM (SELECT source_key FROM {DB}.ingest_ledger GROUP BY source_key "
            "HAVING argMax(status, recorded_at) = 'loaded')",
        )
        assert committed == len(summary.keys)


def test_sigkill_at_a_random_moment_then_rerun_is_exact(env, s3):
    summary = generate(s3, env.raw_bucket, objects=24, traces_per_object=40, seed=11)
    expected = _expected_rows(s3, env, summary.keys)
    with open_clickhouse(None, env.chdb_path) as ch:
        apply_migrations(ch)
    script = textwrap.dedent("""
        import sys
        from orchestration.clickhouse import open_clickhouse
        from orchestration.loader import load_objects
        from orchestration.local_s3 import s3_client
        from orchestration.settings import load_settings
        s = load_settings()
        with open_clickhouse(None, s.chdb_path) as ch:
            print("open", flush=True)
            load_objects(ch, s3_client(s.s3_endpoint_url), sys.argv[1].split(","), s, group_bytes=20_000,
                         on_object=lambda outcome: print("object", flush=True))
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", script, ",".join(summary.keys)],
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "open"
    assert proc.stdout.readline().strip() == "object"  # killed once objects are committed, before the end
    time.sleep(random.uniform(0, 0.2))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with open_clickhouse(None, env.chdb_path) as ch:  # it really died mid-load
        loaded = query_scalar(
            ch,
            f"SELECT count() FROM (SELECT source_key FROM {DB}.ingest_ledger GROUP BY source_key "
            "HAVING argMax(status, recorded_at) = 'loaded')",
        )
        assert 0 < loaded < len(summary.keys)
    with open_clickhouse(None, env.chdb_path) as ch:
        load_objects(ch, s3, summary.keys, env, run_id="retry")
        assert query_scalar(ch, f"SELECT count() FROM {DB}.observations_staging") == expected
