"""Scores reach a durable table and outlive staging: the Langfuse SDK v5 scores API body and the v2 batch's
score-create, loaded, propagated, then staging emptied (as its TTL would) — the scores stay, one current
row per id; a later version wins whole; a kill at any step converges."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pytest

from orchestration.clickhouse import open_clickhouse, query_rows, query_scalar
from orchestration.loader import load_objects
from orchestration.propagation import propagate
from orchestration.replay import replay_from_raw
from orchestration.schema import apply_migrations
from tests.conftest import INGESTION_V2, SCORES_V5, minute_key, put

DB = "tracehouse"
REPO = Path(__file__).resolve().parents[1]
V5_SCORE = json.loads(SCORES_V5.read_bytes())[0]
SCORE_COLUMNS = (
    "project_id, id, trace_id, observation_id, name, value, string_value, data_type, source, comment"
)


def _scores(ch, table: str = "scores_current") -> dict[str, dict]:
    return {r["id"]: r for r in query_rows(ch, f"SELECT {SCORE_COLUMNS} FROM {DB}.{table} ORDER BY id")}


def _run(ch) -> None:
    propagate(ch, delay_seconds=0, interval_seconds=180, max_windows=10**6)


def _load(ch, s3, env, objects: dict[str, bytes]) -> None:
    keys = []
    for key, body in objects.items():
        time.sleep(1.05)  # S3 LastModified has one-second resolution: each upload in a later second
        keys.append(put(s3, env, key, body))
    assert load_objects(ch, s3, keys, env, run_id="t").count("quarantined") == 0


def test_scores_from_both_sdks_outlive_staging(env, s3, ch):
    _load(
        ch,
        s3,
        env,
        {
            minute_key("p1", "ingestion", "scores.json"): SCORES_V5.read_bytes(),
            minute_key("p1", "ingestion", "batch.json"): INGESTION_V2.read_bytes(),
        },
    )
    _run(ch)
    scores = _scores(ch)
    assert scores[V5_SCORE["id"]] | {"value": round(scores[V5_SCORE["id"]]["value"], 6)} == {
        "project_id": "p1",
        "id": V5_SCORE["id"],
        "trace_id": V5_SCORE["traceId"],
        "observation_id": "",
        "name": "correctness",
        "value": 1.0,
        "string_value": "",
        "data_type": "NUMERIC",
        "source": "API",
        "comment": "",
    }
    thumbs = next(s for s in scores.values() if s["name"] == "thumbs")
    assert thumbs["comment"] == "good" and thumbs["trace_id"] == "380a383c-28aa-4973-8a11-96c486e106ac"
    assert len(scores) == 2 == query_scalar(ch, f"SELECT count() FROM {DB}.scores")

    ch.command(f"TRUNCATE TABLE {DB}.scores_staging")  # what the 14-day TTL does
    _load(ch, s3, env, {minute_key("p1", "ingestion", "later.json"): INGESTION_V2.read_bytes()})
    _run(ch)
    assert _scores(ch) == scores  # still there, still once


def _versions() -> dict[str, bytes]:
    """The v5 score, then a corrected version (same id, same timestamp) and a categorical and a boolean
    score derived from it."""
    corrected = {**V5_SCORE, "value": 0.25, "comment": "re-graded"}
    categorical = {**V5_SCORE, "id": V5_SCORE["id"] + "-c", "name": "tone", "value": "friendly"}
    boolean = {**V5_SCORE, "id": V5_SCORE["id"] + "-b", "name": "safe", "value": True}
    return {
        minute_key("p1", "ingestion", "b-first.json"): orjson.dumps([V5_SCORE]),
        minute_key("p1", "ingestion", "a-corrected.json"): orjson.dumps([corrected, categorical, boolean]),
    }


def test_a_later_version_wins_whole_apart_together_and_replayed(env, s3, ch):
    objects = _versions()
    keys = list(objects)
    _load(ch, s3, env, {keys[0]: objects[keys[0]]})
    _run(ch)
    assert _scores(ch)[V5_SCORE["id"]]["value"] == 1.0
    _load(ch, s3, env, {keys[1]: objects[keys[1]]})
    _run(ch)
    scores = _scores(ch)
    assert (scores[V5_SCORE["id"]]["value"], scores[V5_SCORE["id"]]["comment"]) == (0.25, "re-graded")
    assert scores[V5_SCORE["id"] + "-c"] | {} == {
        **scores[V5_SCORE["id"] + "-c"],
        "value": None,
        "string_value": "friendly",
        "data_type": "CATEGORICAL",
    }
    assert (scores[V5_SCORE["id"] + "-b"]["value"], scores[V5_SCORE["id"] + "-b"]["data_type"]) == (
        1.0,
        "BOOLEAN",
    )
    assert query_scalar(ch, f"SELECT count() FROM {DB}.scores") == 3  # superseded rows deleted

    apply_migrations(ch, db="together")
    load_objects(ch, s3, keys, env, run_id="together", db="together")
    propagate(ch, delay_seconds=0, interval_seconds=180, db="together")
    assert _scores_in(ch, "together") == scores
    ch.command(f"TRUNCATE TABLE {DB}.scores")  # lost: a replay rebuilds it from the raw bucket
    replay_from_raw(ch, s3, env)
    assert _scores(ch) == scores


def _scores_in(ch, db: str) -> dict[str, dict]:
    return {
        r["id"]: r for r in query_rows(ch, f"SELECT {SCORE_COLUMNS} FROM {db}.scores_current ORDER BY id")
    }


_CRASH = textwrap.dedent(
    """
    import os, sys
    from orchestration import scores
    from orchestration.clickhouse import ChdbClickHouse, open_clickhouse
    from orchestration.propagation import propagate
    from orchestration.settings import load_settings

    command = ChdbClickHouse.command
    def die_at(prefix):
        def hooked(self, sql, params=None):
            if sql.startswith(prefix):
                os._exit(9)
            return command(self, sql, params)
        return hooked
    ChdbClickHouse.command = die_at(sys.argv[1])
    with open_clickhouse(None, load_settings().chdb_path) as ch:
        propagate(ch, delay_seconds=0, interval_seconds=180)
    """
)


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO tracehouse.events_hidden (propagation_id, kind, project_id",
        "DELETE FROM tracehouse.scores",
    ],
)
def test_a_kill_while_scores_are_written_converges(env, s3, statement):
    objects = _versions()
    keys = list(objects)
    with open_clickhouse(None, env.chdb_path) as ch:
        apply_migrations(ch)
        _load(ch, s3, env, {keys[0]: objects[keys[0]]})
        _run(ch)
        _load(ch, s3, env, {keys[1]: objects[keys[1]]})
    child = subprocess.run(
        [sys.executable, "-c", _CRASH, statement], cwd=REPO, env=os.environ, capture_output=True, timeout=180
    )
    assert child.returncode == 9, child.stderr.decode()[-2000:]
    with open_clickhouse(None, env.chdb_path) as ch:
        assert query_scalar(ch, f"SELECT count() - uniqExact(id) FROM {DB}.scores") > 0  # stored twice
        assert query_scalar(ch, f"SELECT count() - uniqExact(id) FROM {DB}.scores_current") == 0  # seen once
        _run(ch)
        assert query_scalar(ch, f"SELECT count() - uniqExact(id) FROM {DB}.scores") == 0
        assert _scores(ch)[V5_SCORE["id"]]["value"] == 0.25


def test_scores_daily_and_trace_summaries_carry_the_scores(env, s3, ch):
    from orchestration.models import build_day, load_models, rebuild

    objects = _versions()
    _load(
        ch,
        s3,
        env,
        {**objects, minute_key("p1", "ingestion", "batch.json"): INGESTION_V2.read_bytes()},
    )
    _run(ch)
    models = load_models()
    current = query_rows(ch, f"SELECT * FROM {DB}.scores_current")
    for day in sorted({s["timestamp"].date() for s in current}):
        build_day(ch, models["scores_daily"], day)
    # an independent computation of scores_daily from the current scores
    expected = {}
    for s in current:
        key = (s["project_id"], s["timestamp"].date(), s["name"], s["source"], s["data_type"])
        expected.setdefault(key, []).append(s)
    daily = query_rows(ch, f"SELECT * FROM {DB}.scores_daily")
    assert len(daily) == len(expected)
    for row in daily:
        group = expected[(row["project_id"], row["day"], row["name"], row["source"], row["data_type"])]
        values = [s["value"] for s in group if s["value"] is not None]
        assert row["scores"] == len(group)
        if values:
            assert row["avg_value"] == pytest.approx(sum(values) / len(values))
        categories = [s["string_value"] for s in group if s["string_value"]]
        assert dict(row["category_counts"]) == {c: categories.count(c) for c in set(categories)}

    rebuild(ch, models["trace_summaries"])
    summary = query_rows(
        ch,
        f"SELECT score_avg, score_last, score_count FROM {DB}.trace_summaries WHERE trace_id = {{t:String}}",
        {"t": "380a383c-28aa-4973-8a11-96c486e106ac"},
    )[0]
    assert dict(summary["score_count"]) == {"thumbs": 1}
    assert dict(summary["score_avg"]) == {"thumbs": 1.0} and dict(summary["score_last"]) == {"thumbs": "1"}
