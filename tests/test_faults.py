"""Faults with real processes: S3 going away mid-load, a replay killed mid-build, retry policies."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestration.clickhouse import open_clickhouse, query_rows, query_scalar
from orchestration.generate import generate
from orchestration.loader import load_objects
from orchestration.local_s3 import LocalS3, ensure_bucket
from orchestration.models import load_models, rebuild
from orchestration.propagation import propagate
from orchestration.schema import apply_migrations
from orchestration.settings import load_settings

DB = "tracehouse"
REPO = Path(__file__).resolve().parents[1]


def test_s3_stopping_mid_load_fails_cleanly_and_the_next_run_completes(env, tmp_path, monkeypatch):
    server = LocalS3.start(tmp_path / "s3")
    try:
        monkeypatch.setenv("S3_ENDPOINT_URL", server.endpoint_url)
        client = server.client()
        ensure_bucket(client, env.raw_bucket)
        keys = generate(client, env.raw_bucket, "", objects=8, traces_per_object=3, seed=11).keys
        settings = load_settings()
        with open_clickhouse(None, settings.chdb_path) as ch:
            apply_migrations(ch)

            def stop_after_first(_outcome) -> None:
                if server.process is not None:
                    server.stop()

            with pytest.raises(Exception) as failure:  # noqa: B017 (boto's connection errors vary)
                load_objects(ch, client, keys, settings, run_id="r1", group_bytes=1, fetch_threads=1,
                             on_object=stop_after_first)  # fmt: skip
            assert "quarantin" not in str(failure.value)
            states = query_rows(
                ch,
                f"SELECT toString(argMax(status, recorded_at)) AS s, count() AS n FROM {DB}.ingest_ledger "
                "GROUP BY source_key",
            )
            assert all(r["s"] in ("loaded", "started") for r in states)  # nothing quarantined for an outage
            server = LocalS3.start(tmp_path / "s3")  # same data and credentials, new ports
            client = server.client()
            report = load_objects(ch, client, keys, settings, run_id="r2")
            assert report.count("quarantined") == 0
            loaded = query_scalar(
                ch,
                f"SELECT count() FROM (SELECT source_key FROM {DB}.ingest_ledger GROUP BY source_key "
                "HAVING argMax(status, recorded_at) = 'loaded')",
            )
            assert loaded == len(keys)
            per_object = query_rows(
                ch,
                f"SELECT source_key, uniqExact(load_id) AS loads FROM {DB}.observations_staging "
                "GROUP BY source_key",
            )
            assert len(per_object) == len(keys) and all(r["loads"] == 1 for r in per_object)  # exactly once
    finally:
        server.stop()


_KILL_REPLAY = textwrap.dedent(
    """
    import os
    from orchestration import models
    from orchestration.clickhouse import ChdbClickHouse, open_clickhouse
    from orchestration.settings import load_settings

    command = ChdbClickHouse.command
    def die_at_swap(self, sql, params=None):
        if sql.startswith("EXCHANGE TABLES"):
            os._exit(9)
        return command(self, sql, params)
    ChdbClickHouse.command = die_at_swap
    with open_clickhouse(None, load_settings().chdb_path) as ch:
        models.rebuild(ch, models.load_models()["trace_summaries"])
    """
)


def test_replay_killed_before_the_swap_leaves_the_model_whole(env, s3):
    with open_clickhouse(None, env.chdb_path) as ch:
        apply_migrations(ch)
        load_objects(ch, s3, generate(s3, env.raw_bucket, "", objects=3, seed=2).keys, env, run_id="t")
        propagate(ch, delay_seconds=0, interval_seconds=180)
        rebuild(ch, load_models()["trace_summaries"])
        before = query_rows(ch, f"SELECT * FROM {DB}.trace_summaries ORDER BY ALL")
    child = subprocess.run(
        [sys.executable, "-c", _KILL_REPLAY], cwd=REPO, env=os.environ, capture_output=True
    )
    assert child.returncode == 9, child.stderr.decode()[-2000:]
    with open_clickhouse(None, env.chdb_path) as ch:
        assert query_rows(ch, f"SELECT * FROM {DB}.trace_summaries ORDER BY ALL") == before
        shadows = (
            f"SELECT count() FROM system.tables WHERE database = '{DB}' AND name LIKE 'trace_summaries__%'"
        )
        assert query_scalar(ch, shadows) == 1  # the half-built shadow the kill left
        rebuild(ch, load_models()["trace_summaries"])
        assert query_scalar(ch, shadows) == 0  # cleaned by the next build
        assert query_rows(ch, f"SELECT * FROM {DB}.trace_summaries ORDER BY ALL") == before


def test_loads_and_propagation_retry_with_backoff():
    from assets.events import propagation
    from assets.staging import staging_tables

    for asset in (staging_tables, propagation):
        policy = asset.op.retry_policy
        assert policy is not None and policy.max_retries >= 2 and policy.backoff is not None


def test_a_killed_parser_process_is_replaced(env, s3, ch):
    from orchestration import loader

    first = generate(s3, env.raw_bucket, "", objects=3, traces_per_object=2, seed=21).keys
    assert load_objects(ch, s3, first, env, run_id="t").count("loaded") == 3
    pool = loader._PARSERS
    if (os.cpu_count() or 1) < 2:  # one core: objects are parsed in threads, there is no pool to break
        assert pool is None
        return
    for process in list(pool._processes.values()):
        process.kill()
    more = generate(s3, env.raw_bucket, "", objects=3, traces_per_object=2, seed=22).keys
    report = load_objects(ch, s3, more, env, run_id="t")
    assert report.count("loaded") == 3 and loader._PARSERS is not pool
