"""How long a fresh ``tracehouse dev`` takes to show each stage: the README's timings, measured.

Starts the real command (``tracehouse dev``: local SeaweedFS, ``dagster dev``, the demo generator) in a
throw-away home and reads its Dagster instance until every watched asset has its first materialization.
``python -m bench.dev_timings [--delay SECONDS]``; results are appended to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from orchestration.local_s3 import free_port
from orchestration.processes import stop_tree

REPO = Path(__file__).resolve().parents[1]
WATCHED = ("observations_staging", "events", "usage_daily", "trace_summaries", "session_summaries")


def _ui_up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):  # noqa: S310 (loopback)
            return True
    except OSError:
        return False


def measure(delay: int, timeout: float) -> dict[str, float]:
    """Seconds from starting ``tracehouse dev`` to the UI answering and to each watched asset's first
    materialization."""
    with tempfile.TemporaryDirectory(prefix="tracehouse-devtimings-") as home:
        env = {**os.environ, "TRACEHOUSE_HOME": home, "PROPAGATION_DELAY_SECONDS": str(delay)}
        env.pop("DAGSTER_HOME", None)
        port = free_port()
        log = (Path(home) / "dev.log").open("w")
        cli = Path(sys.executable).parent / "tracehouse"
        started = time.monotonic()
        process = subprocess.Popen(
            [str(cli), "dev", "--port", str(port)], cwd=REPO, env=env, stdout=log, stderr=log
        )
        seen: dict[str, float] = {}
        instance = None
        try:
            while len(seen) < len(WATCHED) + 1:
                elapsed = time.monotonic() - started
                if elapsed > timeout:
                    raise TimeoutError(f"not seen within {timeout:.0f} s: {set(WATCHED) - set(seen)}")
                if process.poll() is not None:
                    raise RuntimeError(f"tracehouse dev exited {process.returncode}: see {log.name}")
                if "ui" not in seen and _ui_up(port):
                    seen["ui"] = elapsed
                config = Path(home) / "dagster" / "dagster.yaml"
                if instance is None and config.exists():
                    instance = dg.DagsterInstance.from_config(str(config.parent))
                for asset in WATCHED if instance else ():
                    if asset not in seen and instance.get_latest_materialization_event(dg.AssetKey(asset)):
                        seen[asset] = time.monotonic() - started
                time.sleep(2)
        finally:
            stop_tree(process, grace=30)
            log.close()
            if instance is not None:
                instance.dispose()
        return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=int, default=300, help="PROPAGATION_DELAY_SECONDS (default: 300)")
    parser.add_argument("--timeout", type=float, default=1200)
    args = parser.parse_args()
    seen = measure(args.delay, args.timeout)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    lines = [
        f"## `tracehouse dev`, PROPAGATION_DELAY_SECONDS={args.delay} ({stamp} UTC, {machine})",
        "",
        "| first seen | seconds after start |",
        "| --- | --- |",
        *(f"| {name} | {seconds:.0f} |" for name, seconds in seen.items()),
        "",
    ]
    print("\n".join(lines))
    out = REPO / "bench" / "results" / "dev-timings.md"
    with out.open("a") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
