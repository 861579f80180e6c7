"""The command line's one way into the pipeline: the code location's own jobs, executed in-process on the
Dagster instance under ``TRACEHOUSE_HOME``, so a replay or migration started from a shell is a run in the
UI's history with its materializations, checks and partitions — and no pipeline logic lives in the CLI.

Embedded chDB allows one process per data folder: stop ``tracehouse dev`` before running these (a server
URL has no such limit).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg

from orchestration.faults import EXIT_BUG
from orchestration.settings import Settings

_DAGSTER_YAML = """\
# Written by `tracehouse dev` and the CLI on every start: edit the generator (orchestration/dagster_runs.py).
telemetry:
  enabled: false
nux:
  enabled: false  # no "join the community" pop-up on the first visit
freshness:
  enabled: true  # the models' freshness policies are evaluated by the daemon (Dagster 1.13's default, said)
{storage}concurrency:
  runs:
    max_concurrent_runs: {max_runs}
  pools:
    default_limit: 1  # propagation, each analytics_<model>, analytics_changed_days (docs/operations.md)
    granularity: run  # the run queue starts a run only when every pool of its steps has a free slot
"""

# The URL (with its password) stays in the environment: the file names the variable, Dagster reads it.
_POSTGRES_STORAGE = """\
storage:
  postgres:
    postgres_url:
      env: DAGSTER_POSTGRES_URL
"""

# Server mode: the pools whose work may overlap; every other pool of the code location gets 1. A limit set
# in the UI or with `dagster instance concurrency set` is kept: these apply only to a pool without one.
POOL_LIMITS = {"clickhouse": 4, "legacy_migration": 4}
# Runs at once in server mode; embedded chDB allows one process per data folder, so one run at a time.
SERVER_MAX_RUNS = 8


def write_dagster_home(settings: Settings) -> Path:
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    storage = _POSTGRES_STORAGE if settings.dagster_postgres_url_set else ""
    max_runs = 1 if settings.embedded else SERVER_MAX_RUNS
    (home / "dagster.yaml").write_text(_DAGSTER_YAML.format(storage=storage, max_runs=max_runs))
    return home


def code_location_pools() -> set[str]:
    """Every pool an op of the code location names."""
    from orchestration.definitions import build_definitions

    jobs = build_definitions().resolve_all_job_defs()
    return {op.pool for job in jobs for op in job.graph.iterate_op_defs() if op.pool}


def set_pool_limits(on: dg.DagsterInstance, settings: Settings) -> None:
    """Give each pool of the code location its server-mode limit unless it has one already.

    Explicitly, not through ``pools: default_limit``: Dagster's run queue applies the default to a pool it
    has not seen before only from its next pass, so the first batch of queued runs of a new pool all start
    at once (seen here: three propagations together on a fresh instance).
    """
    if settings.embedded:
        return  # one run at a time
    storage = on.event_log_storage
    configured = storage.get_concurrency_keys()
    for pool in sorted(code_location_pools() - configured):
        storage.set_concurrency_slots(pool, POOL_LIMITS.get(pool, 1))


def dagster_dev_command(port: int) -> list[str]:
    """``dagster dev`` on this code location, the webserver bound to loopback only."""
    target = (
        ["-w", "workspace.yaml"] if Path("workspace.yaml").exists() else ["-m", "orchestration.definitions"]
    )
    dagster = shutil.which("dagster", path=str(Path(sys.executable).parent)) or "dagster"
    return [dagster, "dev", *target, "-h", "127.0.0.1", "-p", str(port)]


# the CLI prints its own progress and summary; Dagster's DEBUG event stream stays in the run's log (UI)
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def instance(settings: Settings) -> dg.DagsterInstance:
    """The instance ``tracehouse dev`` uses, its config and pool limits written the same way."""
    on = dg.DagsterInstance.from_config(str(write_dagster_home(settings)))
    set_pool_limits(on, settings)
    return on


def run_job(
    job: str,
    on: dg.DagsterInstance,
    *,
    run_config: Mapping[str, Any] | None = None,
    partition_key: str | None = None,
    tags: Mapping[str, str] | None = None,
    assets: Sequence[str] | None = None,
) -> dg.ExecuteInProcessResult:
    """Execute one job of the code location (``assets``: only those of an asset job) and return its result;
    a failed run is returned, not raised: its events say why."""
    from orchestration.definitions import build_definitions

    return (
        build_definitions()
        .resolve_job_def(job)
        .execute_in_process(
            run_config={**QUIET, **(run_config or {})},
            instance=on,
            partition_key=partition_key,
            tags={"tracehouse/launched_by": "cli", **(tags or {})},
            asset_selection=[dg.AssetKey(a) for a in assets] if assets else None,
            raise_on_error=False,
        )
    )


def partition_range(first: str, last: str) -> dict[str, str]:
    """Tags of a run over a range of partitions (a single-run backfill)."""
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}


def contiguous(days: Sequence[date]) -> list[tuple[date, date]]:
    """Sorted days grouped into ranges of consecutive days (one run per range)."""
    ranges: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if ranges and (day - ranges[-1][1]).days == 1:
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


def materialized(result: dg.ExecuteInProcessResult, asset: str) -> list[dict[str, Any]]:
    """The metadata of each materialization of ``asset`` in a run, as plain values."""
    return [
        {k: v.value for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
        if event.materialization.asset_key == dg.AssetKey(asset)
    ]


@dataclass(frozen=True)
class RunFailure:
    reason: str  # one line: the failed steps' descriptions or errors
    metadata: dict[str, Any]  # what a ``dg.Failure`` carried (``fault_code``: the command's exit code)
    details: str  # the errors with their tracebacks and causes, for the log file
    interrupted: bool = False  # stopped by SIGINT/SIGTERM (Dagster's handler caught it), not a fault


def failure(result: dg.ExecuteInProcessResult) -> RunFailure:
    """Why a run failed, from its step failure events."""
    reasons: list[str] = []
    metadata: dict[str, Any] = {}
    details: list[str] = []
    interrupted = False
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        if data.user_failure_data:
            reasons.append(data.user_failure_data.description or "")
            metadata.update({k: v.value for k, v in data.user_failure_data.metadata.items()})
        elif data.error:
            error = data.error  # Dagster's wrapper first; the user code's exception is its cause
            interrupted |= error.cls_name == "DagsterExecutionInterruptedError"
            while error.cause is not None and (error.cls_name or "").startswith("Dagster"):
                error = error.cause
            reasons.append(f"unexpected {error.message.strip().splitlines()[0][:300]}")  # "ValueError: …"
            metadata.setdefault("fault_code", EXIT_BUG)  # not a fault this code knows: a bug
        if data.error:
            details.append(f"step {event.step_key}:\n{data.error.to_string()}")
    reason = "; ".join(r for r in reasons if r) or f"run {result.run_id} did not succeed"
    return RunFailure(reason, metadata, "\n".join(details), interrupted)
