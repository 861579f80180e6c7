"""The production path end to end: ``tracehouse dev`` with Dagster's storage in PostgreSQL and ClickHouse as a
server reached through clickhouse-connect (the HTTP fixture in front of chDB). The daemon's sensor launches
load runs, propagation and model runs are submitted the way the UI does, several at once; the run queue
holds them to the pools; every object is loaded once and every observation lands in ``events`` once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster_graphql import DagsterGraphQLClient

from assets.events import duplicate_rows, missing_from_events
from orchestration.clickhouse import query_rows, query_scalar
from orchestration.dagster_runs import POOL_LIMITS, code_location_pools
from orchestration.generate import generate
from orchestration.local_s3 import free_port
from orchestration.processes import stop_tree
from tests.conftest import INGESTION_V2, OTLP_PB, connect, minute_key, put
from tests.dagster_web import wait_loaded
from tests.postgres import postgres, server_binaries

pytestmark = pytest.mark.skipif(
    server_binaries() is None, reason="no PostgreSQL server (tests/ensure_system_packages.sh installs it)"
)
DB = "tracehouse"
PROPAGATE = {"ops": {"propagation": {"config": {"delay_seconds": 0}}}}
LAST = [("propagate_events", PROPAGATE), ("refresh_models", {})]
# runs the schedules and the automation sensor launch on their own may still be going when the test ends
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def _wait(what: str, done, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"no deadlock, but {what} did not happen in {timeout:.0f} s"
        time.sleep(1)


def _any_overlap(runs: list[dg.RunRecord]) -> bool:
    """Whether any two of ``runs`` were in progress at the same time."""
    spans = sorted((r.start_time, r.end_time) for r in runs)
    return any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))


@pytest.mark.parametrize("env", ["server"], indirect=True)
def test_concurrent_runs_on_postgres_load_every_object_and_observation_once(env, s3, tmp_path, monkeypatch):
    first = generate(s3, env.raw_bucket, objects=4, traces_per_object=15, seed=7).keys
    first += [
        put(s3, env, minute_key("proj-real", "otlp", "langfuse-v5.pb.gz"), OTLP_PB.read_bytes()),
        put(s3, env, minute_key("proj-real", "ingestion", "langfuse-v2.json"), INGESTION_V2.read_bytes()),
    ]
    with postgres() as url:
        monkeypatch.setenv("DAGSTER_POSTGRES_URL", url)
        monkeypatch.setenv("TRACEHOUSE_RUN_MAX_OBJECTS", "2")  # the first tick's 6 objects: 3 load runs
        port, log = free_port(), tmp_path / "dev.log"
        with log.open("w") as out:
            dev = subprocess.Popen(
                [str(Path(sys.executable).parent / "tracehouse"), "dev", "--no-demo", "--port", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_loaded(f"http://127.0.0.1:{port}", dev, log)
            yaml = (env.dagster_home / "dagster.yaml").read_text()
            assert "env: DAGSTER_POSTGRES_URL" in yaml and url not in yaml  # the URL stays in the environment
            client = DagsterGraphQLClient("127.0.0.1", port_number=port)
            submitted = [
                client.submit_job_execution("propagate_events", run_config=PROPAGATE) for _ in range(3)
            ]
            submitted.append(client.submit_job_execution("refresh_models"))
            late = generate(s3, env.raw_bucket, objects=2, traces_per_object=15, seed=8).keys  # a second tick
            keys = first + late

            with connect(env) as ch, dg.DagsterInstance.from_config(str(env.dagster_home)) as instance:

                def loaded() -> bool:
                    return query_scalar(
                        ch, f"SELECT uniqExactIf(source_key, status = 'loaded') FROM {DB}.ingest_ledger"
                    ) == len(keys)

                def finished(run_ids: list[str]) -> bool:
                    return all(instance.get_run_by_id(run_id).is_finished for run_id in run_ids)

                def load_runs() -> list[str]:
                    return [r.run_id for r in instance.get_runs(dg.RunsFilter(job_name="load_raw_batches"))]

                _wait("every object loaded", loaded)
                _wait("the runs submitted and the loads", lambda: finished(submitted + load_runs()))
                for job, config in LAST:  # after every load, one after the other
                    submitted.append(client.submit_job_execution(job, run_config=config))
                    _wait(f"the last {job}", lambda: finished(submitted[-1:]))

                runs = instance.get_run_records(dg.RunsFilter(statuses=list(FINISHED)))
                failed = [r.dagster_run for r in runs if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS]
                assert not failed, [(r.job_name, r.run_id, r.status) for r in failed]
                by_job: dict[str, list[dg.RunRecord]] = {}
                for record in runs:
                    by_job.setdefault(record.dagster_run.job_name, []).append(record)
                assert set(submitted) <= {r.dagster_run.run_id for r in runs}  # recorded in PostgreSQL
                assert len(by_job["load_raw_batches"]) >= 4  # 3 runs of the first 6 objects, then the late
                # several runs at once (the embedded limit of one run is lifted in server mode) ...
                assert _any_overlap(runs)
                # ... but never two propagations: the run queue holds them to the pool's limit of 1
                propagations = by_job["propagate_events"]
                assert len(propagations) >= 4  # the test's four, and the schedule's every 3 minutes
                assert not _any_overlap(propagations)

                ledger = query_rows(
                    ch,
                    f"SELECT source_key, countIf(status = 'loaded') AS loads, countIf(status = 'started') AS "
                    f"starts FROM {DB}.ingest_ledger GROUP BY source_key",
                )
                assert sorted(r["source_key"] for r in ledger) == sorted(keys)
                assert all(r["loads"] == 1 and r["starts"] == 1 for r in ledger), ledger  # once each
                staged = query_scalar(ch, f"SELECT uniqExact(project_id, id) FROM {DB}.observations_staging")
                assert staged > 100 and missing_from_events(ch) == 0
                for table in ("events", "events_core"):
                    assert duplicate_rows(ch, table) == 0, table
                    assert query_scalar(ch, f"SELECT count() FROM {DB}.{table}") == staged, table
                summaries = query_rows(
                    ch,
                    f"SELECT count() AS n, uniqExact(project_id, trace_id) AS ids FROM {DB}.trace_summaries",
                )[0]
                assert summaries["n"] == summaries["ids"] > 0  # built by concurrent runs, each trace once
                limits = {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}
                pools = code_location_pools()
                assert {pool: limits.get(pool) for pool in pools} == {p: POOL_LIMITS.get(p, 1) for p in pools}
        finally:
            stop_tree(dev, grace=30)
