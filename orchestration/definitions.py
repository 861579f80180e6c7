"""The Dagster code location: every asset, check, job, schedule and sensor the stage modules of ``assets/``
and ``sensors/`` define, found by Dagster's module loader (no hand-kept list: a job or schedule written next
to its assets is in the code location), with the resources and the executor."""

from __future__ import annotations

import warnings

import dagster as dg

import assets
import sensors
from orchestration.resources import build_resources


def build_definitions() -> dg.Definitions:
    """The code location, its resources read from the environment now: the command line builds it for
    each run it executes, so a run never uses an environment read earlier in the process."""
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", dg.PreviewWarning
        )  # the package loaders are "preview" in Dagster 1.13
        return dg.Definitions.merge(
            dg.load_definitions_from_package_module(assets),
            dg.load_definitions_from_package_module(sensors),
            dg.Definitions(
                resources=build_resources(),
                # Steps run in the run's process on both backends: embedded chDB allows one process per data
                # folder, and with a server a step is ClickHouse statements Python waits for, so parallelism
                # comes from concurrent runs (the pools), not from a process per step that imports this code
                # location again (3.6 s of CPU each, docs/operations.md).
                executor=dg.in_process_executor,
            ),
        )


defs = build_definitions()  # what Dagster loads (workspace.yaml)
