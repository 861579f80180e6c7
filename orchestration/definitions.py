"""The Dagster code location: every asset, check, job, schedule and sensor the stage modules of ``assets/``
and ``sensors/`` define, found by Dagster's module loader (no hand-kept list: a job or schedule written next
to its assets is in the code location), with the resources and the executor.

Nothing here runs at import: Dagster calls ``defs`` (``@dg.definitions``) when it loads the code location,
and only then are the settings read. A stage module whose definitions a setting shapes (a schedule's cron, a
partitions start, a database name) also defines ``configured_definitions(settings)``; it is found the same
way, by walking the stage packages.
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings
from collections.abc import Iterator
from types import ModuleType

import dagster as dg

from orchestration.resources import build_resources
from orchestration.settings import Settings, load_settings

STAGE_PACKAGES = ("assets", "sensors")
HOOK = "configured_definitions"


def _stage_modules() -> Iterator[ModuleType]:
    for package_name in STAGE_PACKAGES:
        package = importlib.import_module(package_name)
        yield package
        for info in pkgutil.walk_packages(package.__path__, f"{package_name}."):
            yield importlib.import_module(info.name)


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    """The code location, its settings and resources read from the environment now: the command line builds
    it for each run it executes, so a run never uses an environment read earlier in the process."""
    settings = settings or load_settings()
    with warnings.catch_warnings():
        # the package loaders are "preview" and backfill policies "beta" in Dagster 1.13: said once, in
        # docs/design.md, not on every load
        warnings.simplefilter("ignore", dg.PreviewWarning)
        warnings.simplefilter("ignore", dg.BetaWarning)
        static = [
            dg.load_definitions_from_package_module(importlib.import_module(name)) for name in STAGE_PACKAGES
        ]
        configured = [getattr(m, HOOK)(settings) for m in _stage_modules() if hasattr(m, HOOK)]
    return dg.Definitions.merge(
        *static,
        *configured,
        dg.Definitions(
            resources=build_resources(settings),
            # Steps run in the run's process on both backends: embedded chDB allows one process per data
            # folder, and with a server a step is ClickHouse statements Python waits for, so parallelism
            # comes from concurrent runs (the pools), not from a process per step that imports this code
            # location again (3.6 s of CPU each, docs/operations.md).
            executor=dg.in_process_executor,
        ),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """What Dagster loads (workspace.yaml, pyproject's [tool.dagster])."""
    return build_definitions()
