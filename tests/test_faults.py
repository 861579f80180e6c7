"""Faults with real processes: S3 going away mid-load, a replay killed mid-build, retry policies."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from orchestration.clickhouse import open_clickhouse, query_rows, query_scalar
from orchestration.generate import generate
from orchestration.loader import load_objects
from orchestration.local_s3 import LocalS3, ensure_bucket, s3_client
from orchestration.models import load_models, rebuild
from orchestration.propagation import propagate
from orchestration.schema import apply_migrations
from orchestration.settings import load_settings
from tests.conftest import INGESTION_V2, minute_key, put

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

            with pytest.raises((BotoCoreError, ClientError, OSError)) as failure:  # S3 is down, not the data
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


def test_a_load_that_fails_on_a_transient_fault_is_retried_by_dagster(env, s3, migrated, monkeypatch):
    """The staging asset's own retry policy: ClickHouse unreachable on the first attempt, loaded on the
    retry (after the policy's 10 s delay), in one run."""
    import dagster as dg

    from assets.staging import staging_tables
    from orchestration.resources import ClickHouseResource, build_resources

    attempts = []
    connect = ClickHouseResource.connect

    def unreachable_once(self):
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionRefusedError(111, "Connection refused")
        return connect(self)

    monkeypatch.setattr(ClickHouseResource, "connect", unreachable_once)
    key = put(s3, env, minute_key("p1", "ingestion", "b.json"), INGESTION_V2.read_bytes())
    result = dg.materialize(
        [staging_tables],
        resources=build_resources(),
        run_config={"ops": {"staging_tables": {"config": {"keys": [key]}}}},
    )
    assert result.success and len(attempts) == 2
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retried) == 1


def test_a_killed_parser_process_is_replaced(env, s3, ch, monkeypatch):
    """A parser process dying mid-load (killed, out of memory): its objects are parsed again in a new pool."""
    from orchestration import loader

    formats = ("otlp_proto", "ingestion")  # parsed in Python (OTLP/JSON is mapped in ClickHouse)
    keys = generate(s3, env.raw_bucket, "", objects=4, traces_per_object=2, formats=formats, seed=21).keys
    executors = []
    current = loader.ParserPool._current

    def current_whose_first_pool_dies(self):
        executor = current(self)
        if executor not in executors:
            executors.append(executor)
            if len(executors) == 1:  # the first pool loses its workers once it has some
                executor.submit(int).result()
                for process in list(executor._processes.values()):
                    process.kill()
        return executor

    monkeypatch.setattr(loader.ParserPool, "_current", current_whose_first_pool_dies)
    monkeypatch.setattr(loader.os, "cpu_count", lambda: 2)  # a pool also on a one-core machine
    report = load_objects(ch, s3, keys, env, run_id="t")
    assert report.count("loaded") == 4
    assert len(executors) == 2  # the dead pool was replaced


def _load_in_a_spawned_child(keys: list[str], environ: dict[str, str]) -> None:
    os.environ.update(environ)
    settings = load_settings()
    with open_clickhouse(None, settings.chdb_path) as ch:
        apply_migrations(ch)
        report = load_objects(ch, s3_client(settings.s3_endpoint_url), keys, settings, run_id="child")
        assert report.count("loaded") == len(keys)


def test_a_run_process_exits_when_its_load_is_done(env, s3):
    """Dagster runs are multiprocessing children; one that loaded objects must exit, not wait on parser
    processes (it did: two idle workers kept every run process alive, ~1.3 GB each)."""
    import multiprocessing

    formats = ("otlp_proto", "ingestion", "otlp_json")
    keys = generate(s3, env.raw_bucket, "", objects=3, traces_per_object=2, formats=formats, seed=5).keys
    child = multiprocessing.get_context("spawn").Process(
        target=_load_in_a_spawned_child, args=(keys, dict(os.environ))
    )
    child.start()
    child.join(timeout=120)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive and child.exitcode == 0
