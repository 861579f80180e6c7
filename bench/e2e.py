"""End to end through Dagster as ``tracehouse dev`` deploys it: ``dagster dev`` (daemon, sensor, queued runs,
embedded chDB). Two phases: objects landing at a steady rate (the time from an object's upload to its
``loaded`` ledger row), then a burst of objects at once (the spans/s the sensor and its runs sustain,
start-up of every run included). The chDB folder is only read after Dagster has stopped (one process per
folder)."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import dagster as dg

from assets.staging import load_raw_batches
from orchestration.clickhouse import open_clickhouse, query_rows
from orchestration.generate import generate
from orchestration.local_s3 import ensure_bucket, free_port
from orchestration.processes import stop_tree

REPO = Path(__file__).resolve().parents[1]


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (loopback URL we built)
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")


def _loaded_keys(instance: dg.DagsterInstance) -> set[str]:
    keys: set[str] = set()
    for run in instance.get_runs(
        filters=dg.RunsFilter(job_name=load_raw_batches.name, statuses=[dg.DagsterRunStatus.SUCCESS])
    ):
        keys.update(run.run_config.get("ops", {}).get("staging_tables", {}).get("config", {}).get("keys", []))
    return keys


def _wait_loaded(instance: dg.DagsterInstance, keys: set[str], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not keys <= _loaded_keys(instance):
        if time.monotonic() > deadline:
            raise TimeoutError(f"objects not loaded within {timeout:.0f}s")
        time.sleep(1)


def run_e2e(
    home: Path, s3, seconds: float, say: Callable[[str], None], interval: float = 2.0, burst: int = 40
) -> dict[str, Any]:
    from orchestration.dagster_runs import dagster_dev_command, write_dagster_home
    from orchestration.settings import load_settings

    bucket = "tracehouse-e2e"
    ensure_bucket(s3, bucket)
    restore = mock.patch.dict(os.environ, {"TRACEHOUSE_HOME": str(home), "RAW_BUCKET": bucket})
    restore.start()
    settings = load_settings()
    os.environ["DAGSTER_HOME"] = str(write_dagster_home(settings))
    port = free_port()
    log = (home / "dagster.log").open("w")
    process = subprocess.Popen(
        dagster_dev_command(port), cwd=REPO, env=os.environ.copy(), stdout=log, stderr=log
    )
    put_at: dict[str, float] = {}
    try:
        _wait_http(f"http://127.0.0.1:{port}/server_info", 180)
        say(f"e2e: Dagster up; writing one OTLP JSON object every {interval:.0f}s for {seconds:.0f}s")
        started = time.time()
        i = 0
        while time.time() - started < seconds:
            written = generate(
                s3, bucket, "", objects=1, traces_per_object=100, projects=("e2e",), formats=("otlp_json",),
                compress=True, payload_bytes=2200, late_updates=False, seed=i,
            )  # fmt: skip
            put_at[written.keys[0]] = time.time()
            i += 1
            time.sleep(max(0.0, started + i * interval - time.time()))
        say(f"e2e: {len(put_at)} objects written; waiting for their runs")
        with dg.DagsterInstance.get() as instance:
            _wait_loaded(instance, set(put_at))
            runs = len(instance.get_runs(filters=dg.RunsFilter(job_name=load_raw_batches.name)))
            say(f"e2e: a burst of {burst} objects at once")
            burst_written = generate(
                s3, bucket, "", objects=burst, traces_per_object=200, projects=("e2e-burst",),
                formats=("otlp_json",), compress=True, payload_bytes=2200, late_updates=False, seed=10_000,
            )  # fmt: skip
            burst_at, burst_keys = time.time(), set(burst_written.keys)
            _wait_loaded(instance, burst_keys)
            burst_runs = len(instance.get_runs(filters=dg.RunsFilter(job_name=load_raw_batches.name))) - runs
    finally:
        if not stop_tree(process, grace=60):
            say("e2e: `dagster dev` did not stop within 60 s of SIGINT; its processes were killed")
        log.close()
        restore.stop()
    with open_clickhouse(None, settings.chdb_path) as ch:
        rows = query_rows(
            ch,
            "SELECT source_key, max(recorded_at) AS at, max(observations) AS spans "
            "FROM tracehouse.ingest_ledger "
            "WHERE status = 'loaded' GROUP BY source_key",
        )
    burst_rows = [r for r in rows if r["source_key"] in burst_keys]
    burst_spans = sum(r["spans"] for r in burst_rows)
    burst_seconds = max(r["at"].replace(tzinfo=UTC).timestamp() for r in burst_rows) - burst_at
    loaded = {r["source_key"]: r for r in rows if r["source_key"] in put_at}
    latencies = sorted(
        (loaded[k]["at"].replace(tzinfo=UTC) - datetime.fromtimestamp(t, UTC)).total_seconds()
        for k, t in put_at.items()
    )
    spans = sum(r["spans"] for r in loaded.values())
    span_seconds = max(r["at"].replace(tzinfo=UTC).timestamp() for r in loaded.values()) - min(
        put_at.values()
    )
    return {
        "objects": len(put_at),
        "spans": spans,
        "runs": runs,
        "seconds": round(span_seconds, 1),
        "sustained_spans_per_s": round(spans / span_seconds),
        "offered_spans_per_s": round(spans / (max(put_at.values()) - min(put_at.values()) + interval)),
        "latency_p50_s": round(statistics.median(latencies), 1),
        "latency_p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 1),
        "latency_max_s": round(latencies[-1], 1),
        "burst": {
            "objects": burst,
            "spans": burst_spans,
            "mb": round(burst_written.bytes / 1e6, 1),
            "runs": burst_runs,
            "seconds": round(burst_seconds, 1),
            "spans_per_s": round(burst_spans / burst_seconds),
        },
    }
